//! Tests on small handmade dataset folders, plus one on the real Beauty folder when present.

use std::path::Path;

use super::*;

/// Identifier index of 5 items; items 3 and 4 share one identifier.
const INDEX: &str = r#"{
 "0": ["<a_1>", "<b_1>", "<c_1>", "<d_1>"],
 "1": ["<a_1>", "<b_2>", "<c_1>", "<d_1>"],
 "2": ["<a_2>", "<b_1>", "<c_2>", "<d_3>"],
 "3": ["<a_3>", "<b_1>", "<c_1>", "<d_2>"],
 "4": ["<a_3>", "<b_1>", "<c_1>", "<d_2>"]
}"#;
const TRAIN: &str = "1 1 2 3\n2 5\n3 1 2 3 4 5\n\n";
const VALID: &str = "1 4\n2\n3 1\n";
const TEST: &str = "1 4 5 1\n2\n3 2 3\n";

/// Writes a dataset folder; each file is `(name, contents)`.
fn write_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn standard_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("toy.LCRec-1e-3lr.json", INDEX),
        ("sequential_train.txt", TRAIN),
        ("sequential_valid.txt", VALID),
        ("sequential_test.txt", TEST),
        ("titles.json", r#"{"0": "Soap", "2": "Brush"}"#),
    ]
}

/// Standard files with `name` replaced by `text` (or removed when `text` is None).
fn with(name: &str, text: Option<&str>) -> tempfile::TempDir {
    let mut files: Vec<(&str, &str)> = standard_files()
        .into_iter()
        .filter(|(n, _)| *n != name)
        .collect();
    if let Some(t) = text {
        files.push((name, t));
    }
    write_dir(&files)
}

fn load_err(dir: &Path) -> String {
    Dataset::load(dir).unwrap_err().to_string()
}

#[test]
fn loads_tiny_dataset() {
    let dir = write_dir(&standard_files());
    let ds = Dataset::load(dir.path()).unwrap();
    assert_eq!((ds.num_users(), ds.num_items()), (3, 5));
    assert_eq!(ds.train[0], vec![0, 1, 2]);
    assert_eq!(ds.valid[1], Vec::<u32>::new());
    // 4 specials + a{1,2,3} + b{1,2} + c{1,2} + d{1,2,3}
    assert_eq!(ds.vocab.len(), 4 + 3 + 2 + 2 + 3);
    assert_eq!(ds.title(0), "Soap");
    assert_eq!(ds.title(1), "item 1");
    assert_eq!(ds.title(99), "item 99");
    assert!(ds.trie.walk(&ds.items[2]).is_some());
    let s = ds.summary();
    assert_eq!((s.train_interactions, s.valid_interactions), (9, 2));
    assert_eq!((s.train_samples, s.train_samples_last_only), (6, 2));
    assert_eq!((s.test_users, s.valid_samples, s.titled_items), (2, 2, 2));
    assert_eq!(s.tokens_per_level, [3, 2, 2, 3]);
    assert!(s.to_string().contains("1 identifiers shared by 2 items"));
}

#[test]
fn collisions_map_to_all_items() {
    let dir = write_dir(&standard_files());
    let ds = Dataset::load(dir.path()).unwrap();
    assert_eq!(ds.collisions, vec![(ds.items[3], vec![3, 4])]);
    assert_eq!(ds.items_of(&ds.items[4]), &[3, 4]);
    assert_eq!(ds.items_of(&ds.items[0]), &[0]);
    assert!(ds.items_of(&Identifier::from([0, 0, 0, 0])).is_empty());
}

#[test]
fn train_samples_sliding_and_last_only() {
    let dir = write_dir(&standard_files());
    let ds = Dataset::load(dir.path()).unwrap();
    let all = ds.train_samples(DEFAULT_HISTORY, false);
    // user 1: positions 1, 2; user 2: none (one item); user 3: positions 1..=4.
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].user, 1);
    assert_eq!(all[0].history, vec![0]);
    assert_eq!(all[0].target_items, vec![1]);
    assert_eq!(all[0].targets, vec![ds.items[1]]);
    assert_eq!(all[5].history, vec![0, 1, 2, 3]);
    let last = ds.train_samples(DEFAULT_HISTORY, true);
    assert_eq!(last.len(), 2);
    assert_eq!((last[0].user, last[0].history.clone()), (1, vec![0, 1]));
    assert_eq!((last[1].user, last[1].target_items.clone()), (3, vec![4]));
    // History truncated to the last H items.
    let short = ds.train_samples(2, true);
    assert_eq!(short[1].history, vec![2, 3]);
}

#[test]
fn valid_samples_skip_empty() {
    let dir = write_dir(&standard_files());
    let ds = Dataset::load(dir.path()).unwrap();
    let v = ds.valid_samples(2);
    // user 2 has no valid item.
    assert_eq!(v.iter().map(|s| s.user).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(v[0].history, vec![1, 2]);
    assert_eq!(v[0].target_items, vec![3]);
    assert_eq!(v[1].history, vec![3, 4]);
    assert_eq!(v[1].target_items, vec![0]);
}

#[test]
fn test_samples_dedup_and_history() {
    let dir = write_dir(&standard_files());
    let ds = Dataset::load(dir.path()).unwrap();
    let t = ds.test_samples(3);
    assert_eq!(t.iter().map(|s| s.user).collect::<Vec<_>>(), vec![1, 3]);
    // Items 3 and 4 share an identifier: one target, both items listed.
    assert_eq!(t[0].targets, vec![ds.items[3], ds.items[0]]);
    assert_eq!(t[0].target_items, vec![3, 4, 0]);
    // last 3 of train + valid = [1, 2] + [3]
    assert_eq!(t[0].history, vec![1, 2, 3]);
    assert_eq!(t[1].history, vec![3, 4, 0]);
    assert_eq!(ds.test_samples(1)[0].history, vec![3]);
    let u2 = ds.user_sample(2, 20).unwrap();
    assert!(u2.targets.is_empty());
    assert_eq!(u2.history, vec![4]);
    let err = ds.user_sample(4, 20).unwrap_err().to_string();
    assert!(err.contains("user") && err.contains('4'), "{err}");
    assert!(ds.user_sample(0, 20).is_err());
}

#[test]
fn prompt_layout() {
    let dir = write_dir(&standard_files());
    let ds = Dataset::load(dir.path()).unwrap();
    let p = ds.prompt(&[2, 0]);
    let mut want = vec![BOS];
    want.extend_from_slice(&ds.items[2]);
    want.extend_from_slice(&ds.items[0]);
    want.push(SEP);
    assert_eq!(p, want);
    assert_eq!(ds.vocab.render(&p[1..5]), "<a_2><b_1><c_2><d_3>");
    assert_eq!(ds.prompt(&[]), vec![BOS, SEP]);
}

#[test]
fn titles_optional_and_checked() {
    let dir = with("titles.json", None);
    let ds = Dataset::load(dir.path()).unwrap();
    assert!(ds.titles.iter().all(Option::is_none));
    let dir = with("titles.json", Some("{\"0\": "));
    let err = load_err(dir.path());
    assert!(err.contains("titles.json") && err.contains("JSON"), "{err}");
}

#[test]
fn rejects_non_integer_token() {
    let dir = with("sequential_valid.txt", Some("1 4\n2 x7\n3\n"));
    let err = load_err(dir.path());
    assert!(
        err.contains("sequential_valid.txt:2:") && err.contains("\"x7\""),
        "{err}"
    );
    let dir = with("sequential_train.txt", Some("1 1\nuser 2\n3\n"));
    let err = load_err(dir.path());
    assert!(err.contains("sequential_train.txt:2:"), "{err}");
}

#[test]
fn rejects_item_out_of_range() {
    let dir = with("sequential_test.txt", Some("1\n2\n3 6\n"));
    let err = load_err(dir.path());
    assert!(
        err.contains("sequential_test.txt:3:") && err.contains("item 6") && err.contains("1..=5"),
        "{err}"
    );
    let dir = with("sequential_test.txt", Some("1 0\n2\n3\n"));
    assert!(load_err(dir.path()).contains("item 0"));
}

#[test]
fn rejects_bad_user_lines() {
    let dir = with("sequential_test.txt", Some("1\n1\n3\n"));
    let err = load_err(dir.path());
    assert!(err.contains(":2:") && err.contains("twice"), "{err}");
    let dir = with("sequential_test.txt", Some("1\n\n3\n"));
    assert!(load_err(dir.path()).contains("empty line"));
    let dir = with("sequential_test.txt", Some("1\n2\n7\n"));
    assert!(load_err(dir.path()).contains("out of range 1..=3"));
}

#[test]
fn rejects_wrong_token_count() {
    let index = r#"{"0": ["<a_1>", "<b_1>", "<c_1>", "<d_1>"], "1": ["<a_1>", "<b_2>", "<c_1>"],
        "2": ["<a_1>", "<b_1>", "<c_1>", "<d_2>"], "3": ["<a_1>", "<b_1>", "<c_1>", "<d_3>"],
        "4": ["<a_1>", "<b_1>", "<c_1>", "<d_4>"]}"#;
    let dir = with("toy.LCRec-1e-3lr.json", Some(index));
    let err = load_err(dir.path());
    assert!(
        err.contains("toy.LCRec-1e-3lr.json") && err.contains("item 1") && err.contains("3 tokens"),
        "{err}"
    );
}

#[test]
fn rejects_bad_index() {
    let missing =
        r#"{"0": ["<a_1>", "<b_1>", "<c_1>", "<d_1>"], "2": ["<a_1>", "<b_1>", "<c_1>", "<d_2>"]}"#;
    let dir = with("toy.LCRec-1e-3lr.json", Some(missing));
    let err = load_err(dir.path());
    assert!(
        err.contains("toy.LCRec-1e-3lr.json") && err.contains("item 1 missing"),
        "{err}"
    );
    // A level's tokens are any strings (`<e_3>` at level 4 is fine), but not whitespace.
    let renamed = INDEX.replace("<d_3>", "<e_3>");
    let dir = with("toy.LCRec-1e-3lr.json", Some(&renamed));
    assert_eq!(Dataset::load(dir.path()).unwrap().levels, 4);
    let bad_token = INDEX.replace("<d_3>", "<d 3>");
    let dir = with("toy.LCRec-1e-3lr.json", Some(&bad_token));
    let err = load_err(dir.path());
    assert!(
        err.contains("toy.LCRec-1e-3lr.json") && err.contains("<d 3>"),
        "{err}"
    );
    // Identifiers of different lengths: the error names both.
    let uneven = INDEX.replace(
        r#""<a_2>", "<b_1>", "<c_2>", "<d_3>""#,
        r#""<a_2>", "<b_1>", "<c_2>""#,
    );
    let dir = with("toy.LCRec-1e-3lr.json", Some(&uneven));
    let err = load_err(dir.path());
    assert!(
        err.contains("item 2 has 3 tokens, expected 4 as item 0 has"),
        "{err}"
    );
}

#[test]
fn three_level_index_loads() {
    let three = r#"{
 "0": ["<a_1>", "<b_1>", "<c_1>"],
 "1": ["<a_1>", "<b_2>", "<c_1>"],
 "2": ["<a_2>", "<b_1>", "<c_2>"],
 "3": ["<a_3>", "<b_1>", "<c_1>"],
 "4": ["<a_3>", "<b_1>", "<c_1>"]
}"#;
    let dir = with("toy.LCRec-1e-3lr.json", Some(three));
    let ds = Dataset::load(dir.path()).unwrap();
    assert_eq!(ds.levels, 3);
    assert_eq!(ds.trie.depth(), 3);
    assert_eq!(ds.items[2].len(), 3);
    assert_eq!(ds.summary().tokens_per_level, [3, 2, 2]);
    assert_eq!(ds.prompt(&[0]).len(), 3 + 2);
    assert_eq!(ds.collisions.len(), 1);
}

#[test]
fn finds_index_by_rule() {
    // Another JSON name works when it is the only candidate.
    let mut files = standard_files();
    files[0].0 = "codes.json";
    let dir = write_dir(&files);
    assert_eq!(Dataset::load(dir.path()).unwrap().num_items(), 5);
    // Two candidates without the preferred name: ambiguous.
    files.push(("other.json", INDEX));
    let dir = write_dir(&files);
    let err = load_err(dir.path());
    assert!(
        err.contains("ambiguous") && err.contains("other.json"),
        "{err}"
    );
    // The preferred name wins over the others.
    files.push(("toy.LCRec-1e-3lr.json", INDEX));
    let dir = write_dir(&files);
    assert!(Dataset::load(dir.path()).is_ok());
    // No index at all.
    let dir = write_dir(&standard_files()[1..]);
    let err = load_err(dir.path());
    assert!(err.contains("no identifier index"), "{err}");
}

#[test]
fn rejects_missing_file() {
    let dir = with("sequential_valid.txt", None);
    let err = Dataset::load(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("sequential_valid.txt"), "{err}");
    let err = load_err(&dir.path().join("nope"));
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn rejects_mismatched_user_counts() {
    let dir = with("sequential_test.txt", Some("1\n2\n"));
    let err = load_err(dir.path());
    assert!(
        err.contains("sequential_test.txt") && err.contains("2 users") && err.contains("has 3"),
        "{err}"
    );
}

#[test]
fn loads_beauty_when_present() {
    let dir = Path::new("/work/shared/data/beauty");
    if !dir.exists() {
        return;
    }
    let start = std::time::Instant::now();
    let ds = Dataset::load(dir).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(ds.name, "beauty");
    assert_eq!(ds.num_users(), 19_383);
    assert_eq!(ds.num_items(), 12_035);
    assert_eq!(ds.test_samples(DEFAULT_HISTORY).len(), 3_553);
    assert_eq!(ds.collisions.len(), 9);
    assert_eq!(
        ds.collisions.iter().map(|(_, v)| v.len()).sum::<usize>(),
        21
    );
    assert_eq!(ds.vocab.len(), 4 + 91 + 256 * 3);
    assert!(ds.titles.iter().all(Option::is_some));
    let s = ds.summary();
    assert_eq!(s.test_users, 3_553);
    eprintln!("{s}\nloaded in {elapsed:?}");
    assert!(elapsed.as_secs() < 5, "loading took {elapsed:?}");
}
