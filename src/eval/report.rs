//! The paper's Table 1 from bench reports: one row per draft, WS@K and AS@K for every K with
//! their averages, and Recall@5 / NDCG@5 of the final lists.

use std::path::Path;

use super::bench::BenchReport;
use crate::{Error, Result};

pub fn load_report(path: &Path) -> Result<BenchReport> {
    // Reports are a few kilobytes; an endless device or a huge file is refused unread.
    let text = crate::session::read_bounded(path, 64 << 20)?;
    let mut r: BenchReport = serde_json::from_str(&text).map_err(|e| {
        Error::data(
            path,
            format!("not a bench report (from `atspeed bench --json`): {e}"),
        )
    })?;
    // Reports written before N and gamma were recorded per K used the config's for every K.
    for k in &mut r.per_k {
        if k.n == 0 {
            k.n = r.config.decode.n;
        }
        if k.gamma == 0 {
            k.gamma = r.config.decode.gamma;
        }
    }
    Ok(r)
}

/// A markdown table with one row per report, grouped by verification mode.
pub fn table1(reports: &[(String, BenchReport)]) -> String {
    let mut out = String::new();
    for mode in ["strict", "relaxed"] {
        let rows: Vec<&(String, BenchReport)> = reports
            .iter()
            .filter(|(_, r)| r.config.decode.mode.name() == mode)
            .collect();
        let Some((_, first)) = rows.first() else {
            continue;
        };
        let ks: Vec<usize> = first.per_k.iter().map(|r| r.k).collect();
        let shape = if first.config.tune_users > 0 {
            format!(
                "N{} tuned per K",
                if first.config.tune_gamma {
                    " and gamma"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "N={}, gamma={}",
                first.config.decode.n, first.config.decode.gamma
            )
        };
        out.push_str(&format!(
            "\n{mode} verification ({} users, {shape}, {})\n\n| draft |",
            first.per_k.first().map(|r| r.users).unwrap_or(0),
            first.device
        ));
        for k in &ks {
            out.push_str(&format!(" WS@{k} |"));
        }
        out.push_str(" WS avg |");
        for k in &ks {
            out.push_str(&format!(" AS@{k} |"));
        }
        out.push_str(" AS avg | Recall@5 | NDCG@5 |\n|---|");
        out.push_str(&"---|".repeat(2 * ks.len() + 4));
        out.push('\n');
        for (name, r) in rows {
            let n = r.per_k.len().max(1) as f64;
            out.push_str(&format!("| {name} |"));
            for k in &r.per_k {
                out.push_str(&format!(" {:.2} |", k.ws_total));
            }
            out.push_str(&format!(
                " {:.2} |",
                r.per_k.iter().map(|k| k.ws_total).sum::<f64>() / n
            ));
            for k in &r.per_k {
                out.push_str(&format!(" {:.2} |", k.accepted_steps));
            }
            out.push_str(&format!(
                " {:.2} |",
                r.per_k.iter().map(|k| k.accepted_steps).sum::<f64>() / n
            ));
            // Recall/NDCG@5 of the final lists at the largest K that covers 5.
            match r.per_k.iter().rev().find(|k| k.k >= 5) {
                Some(k) => out.push_str(&format!(
                    " {:.4} | {:.4} |\n",
                    k.speculative_metrics.recall(5),
                    k.speculative_metrics.ndcg(5)
                )),
                None => out.push_str(" - | - |\n"),
            }
        }
    }
    if let Some((_, r)) = reports.first() {
        if let Some(k) = r.per_k.iter().rev().find(|k| k.k >= 10) {
            out.push_str(&format!(
                "\ntarget alone (beam search, K={}): Recall@5 {:.4}, Recall@10 {:.4}, NDCG@5 {:.4}, NDCG@10 {:.4}\n",
                k.k,
                k.baseline_metrics.recall(5),
                k.baseline_metrics.recall(10),
                k.baseline_metrics.ndcg(5),
                k.baseline_metrics.ndcg(10)
            ));
        }
    }
    out
}
