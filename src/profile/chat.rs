//! Chat templates rendered as transformers renders them (`apply_chat_template`).
//!
//! transformers renders a checkpoint's Jinja template in a sandbox with `trim_blocks` and
//! `lstrip_blocks`, the loop-controls extension (`break`, `continue`), `raise_exception` and
//! `strftime_now`, a `tojson` that writes Python's `json.dumps` (no HTML escaping, `", "` and
//! `": "` separators), every special token of the tokenizer as a variable (`bos_token`,
//! `eos_token`, ...), and any extra keyword argument (Qwen3's `enable_thinking`). The rendered
//! text is then encoded *without* the tokenizer's special tokens: the template writes BOS itself.
//! MiniJinja (the engine Hugging Face's Rust servers use) with its Python-compatibility methods
//! renders the same templates; `{% generation %}` marks (assistant masks in training) render
//! nothing and are removed first.

use std::collections::BTreeMap;

use minijinja::value::{Kwargs, Serde, Value as JValue};
use minijinja::{Environment, Error as JError, ErrorKind};
use serde_json::Value;

/// One chat message.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Renders `template` with `messages`, as `tokenizer.apply_chat_template(messages,
/// tokenize=False, add_generation_prompt=..., **variables)` does.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    special_tokens: &BTreeMap<String, String>,
    variables: &BTreeMap<String, Value>,
) -> Result<String, String> {
    let source = strip_generation_tags(template);
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| e.to_string())?;
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env.add_template("chat", &source)
        .map_err(|e| format!("the chat template does not parse: {}", describe(&e)))?;
    let mut ctx: BTreeMap<String, JValue> = BTreeMap::new();
    for (k, v) in special_tokens {
        ctx.insert(k.clone(), JValue::from(v.clone()));
    }
    for (k, v) in variables {
        ctx.insert(k.clone(), JValue::from(Serde(v)));
    }
    ctx.insert("messages".into(), JValue::from(Serde(messages)));
    ctx.insert(
        "add_generation_prompt".into(),
        JValue::from(add_generation_prompt),
    );
    ctx.insert("tools".into(), JValue::from(()));
    ctx.insert("documents".into(), JValue::from(()));
    let tmpl = env.get_template("chat").map_err(|e| describe(&e))?;
    tmpl.render(ctx)
        .map_err(|e| format!("the chat template fails to render: {}", describe(&e)))
}

/// The error with its cause chain and line, on one line.
fn describe(e: &JError) -> String {
    let mut s = e.to_string();
    if let Some(line) = e.line() {
        s.push_str(&format!(" (template line {line})"));
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

/// Removes `{% generation %}` / `{% endgeneration %}` (transformers' AssistantTracker tags,
/// which render their body unchanged).
fn strip_generation_tags(t: &str) -> String {
    let re = regex::Regex::new(r"\{%-?\s*(end)?generation\s*-?%\}").expect("valid pattern");
    re.replace_all(t, "").into_owned()
}

fn raise_exception(msg: String) -> Result<JValue, JError> {
    Err(JError::new(ErrorKind::InvalidOperation, msg))
}

/// `strftime_now(fmt)`: the current date and time (UTC here; transformers uses local time), with
/// the directives templates use (`%d %b %B %Y %m %H %M %S %y %j %a %A %%`).
fn strftime_now(fmt: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&fmt, secs)
}

fn strftime(fmt: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(m - 1) as usize] + d + i64::from(leap && m > 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`, keys in their insertion order.
fn tojson(value: JValue, kwargs: Kwargs) -> Result<JValue, JError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let _ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let (item, key) = match &separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let layout = JsonLayout {
        indent,
        sort: sort_keys.unwrap_or(false),
        item,
        key,
    };
    let mut out = String::new();
    layout.write(&value, 0, &mut out)?;
    Ok(JValue::from_safe_string(out))
}

/// Python's `json.dumps` layout.
struct JsonLayout {
    indent: Option<usize>,
    sort: bool,
    item: String,
    key: String,
}

impl JsonLayout {
    fn newline(&self, out: &mut String, level: usize) {
        if let Some(n) = self.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    }

    fn write(&self, v: &JValue, level: usize, out: &mut String) -> Result<(), JError> {
        use minijinja::value::ValueKind;
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                let n: Value = serde_json::to_value(v)
                    .map_err(|e| JError::new(ErrorKind::InvalidOperation, e.to_string()))?;
                match n.as_f64() {
                    // Python writes floats with a fractional part ("1.0").
                    Some(f) if n.is_f64() && f.fract() == 0.0 && f.is_finite() => {
                        out.push_str(&format!("{f:.1}"))
                    }
                    _ => out.push_str(&n.to_string()),
                }
            }
            ValueKind::String | ValueKind::Bytes => out.push_str(
                &serde_json::to_string(v.as_str().unwrap_or_default()).unwrap_or_default(),
            ),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<JValue> = v.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item);
                    }
                    self.newline(out, level + 1);
                    self.write(x, level + 1, out)?;
                }
                self.newline(out, level);
                out.push(']');
            }
            ValueKind::Map => {
                let mut keys: Vec<JValue> = v.try_iter()?.collect();
                if keys.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                if self.sort {
                    keys.sort_by_key(|k| k.to_string());
                }
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item);
                    }
                    self.newline(out, level + 1);
                    out.push_str(&serde_json::to_string(&k.to_string()).unwrap_or_default());
                    out.push_str(&self.key);
                    self.write(&v.get_item(k)?, level + 1, out)?;
                }
                self.newline(out, level);
                out.push('}');
            }
            _ => out.push_str(&serde_json::to_string(&v.to_string()).unwrap_or_default()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(pairs: &[(&str, &str)]) -> Vec<Message> {
        pairs
            .iter()
            .map(|(r, c)| Message {
                role: r.to_string(),
                content: c.to_string(),
            })
            .collect()
    }

    /// Qwen3's template (trimmed to the parts a recommendation prompt reaches) renders as
    /// transformers 5.24 renders it (text captured from `apply_chat_template`).
    #[test]
    fn qwen_style_template_with_thinking_switch() {
        let t = "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n    {%- if enable_thinking is defined and enable_thinking is false %}\n        {{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}\n{%- endif %}";
        let vars: BTreeMap<String, Value> =
            [("enable_thinking".to_string(), Value::Bool(false))].into();
        let got = render(
            t,
            &msgs(&[("system", "S"), ("user", "U")]),
            true,
            &BTreeMap::new(),
            &vars,
        )
        .unwrap();
        assert_eq!(
            got,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        );
        let got = render(
            t,
            &msgs(&[("user", "U")]),
            false,
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(got, "<|im_start|>user\nU<|im_end|>\n");
    }

    #[test]
    fn python_string_methods_specials_and_errors() {
        let specials: BTreeMap<String, String> =
            [("bos_token".to_string(), "<s>".to_string())].into();
        let t = "{{ bos_token }}{% for m in messages %}{% if m.content.startswith('x') %}{{ m.content.split('-')[1].strip() }}{% endif %}{% endfor %}{{ {'b': 1, 'a': [1, 2]} | tojson }}";
        let got = render(
            t,
            &msgs(&[("user", "x- y ")]),
            false,
            &specials,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(got, "<s>y{\"b\": 1, \"a\": [1, 2]}");
        let bad = render(
            "{{ raise_exception('no system role') }}",
            &[],
            false,
            &specials,
            &BTreeMap::new(),
        );
        assert!(bad.unwrap_err().contains("no system role"));
        assert!(render("{% if %}", &[], false, &specials, &BTreeMap::new())
            .unwrap_err()
            .contains("does not parse"));
        let loops = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}{% generation %}!{% endgeneration %}";
        assert_eq!(
            render(
                loops,
                &msgs(&[("a", ""), ("b", "")]),
                false,
                &specials,
                &BTreeMap::new()
            )
            .unwrap(),
            "a!"
        );
    }

    #[test]
    fn strftime_matches_python() {
        // 2024-07-26 13:25:09 UTC, a Friday (checked with Python datetime).
        assert_eq!(
            strftime("%d %b %Y %H:%M:%S %A %j %%", 1_722_000_309),
            "26 Jul 2024 13:25:09 Friday 208 %"
        );
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
    }

    #[test]
    fn tojson_indents_like_python() {
        // json.dumps({"a": [1, {"b": None}], "c": "é", "d": 1.0}, indent=2, ensure_ascii=False)
        let t = "{{ {'a': [1, {'b': none}], 'c': 'é', 'd': 1.0} | tojson(indent=2) }}";
        let got = render(t, &[], false, &BTreeMap::new(), &BTreeMap::new()).unwrap();
        assert_eq!(got, "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"c\": \"é\",\n  \"d\": 1.0\n}");
    }
}
