//! The results: docs/benchmarks.json and docs/benchmarks.md.

use crate::stats::{fmt, paired_ratios, round, Summary};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;

/// One measured quantity.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub unit: String,
    pub summary: Option<Summary>,
    /// For ratios: the ratio of the two medians (the headline figure); the
    /// summary then holds the per-pair ratios, for the spread.
    pub ratio_of_medians: Option<f64>,
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    AtMost,
    AtLeast,
}

/// A goal from the issue and whether the run met it.
#[derive(Debug, Clone)]
pub struct Goal {
    pub text: String,
    pub value: Option<f64>,
    pub unit: String,
    pub cmp: Cmp,
    pub threshold: f64,
    /// How the value was obtained (which row, which statistic).
    pub basis: String,
}

impl Goal {
    pub fn met(&self) -> Option<bool> {
        self.value.map(|v| match self.cmp {
            Cmp::AtMost => v <= self.threshold,
            Cmp::AtLeast => v >= self.threshold,
        })
    }

    pub fn status(&self) -> &'static str {
        match self.met() {
            Some(true) => "met",
            Some(false) => "missed",
            None => "not measured",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Section {
    pub id: String,
    pub title: String,
    /// How it was measured (Markdown).
    pub method: String,
    pub rows: Vec<Row>,
    pub goals: Vec<Goal>,
    /// Anything that went wrong or is worth a look (Markdown lines).
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(id: &str, title: &str, method: &str) -> Section {
        Section {
            id: id.into(),
            title: title.into(),
            method: method.into(),
            ..Default::default()
        }
    }

    /// Adds a row; returns its summary.
    pub fn value(&mut self, name: &str, unit: &str, values: &[f64]) -> Option<Summary> {
        let s = Summary::of(values);
        self.rows.push(Row {
            name: name.into(),
            unit: unit.into(),
            summary: s.clone(),
            ratio_of_medians: None,
            note: String::new(),
        });
        s
    }

    /// Adds a single figure (n = 1).
    pub fn single(&mut self, name: &str, unit: &str, v: f64) {
        self.value(name, unit, &[v]);
    }

    /// Adds the ratio a/b of two samples measured side by side: the ratio of
    /// their medians, with the spread of the per-pair ratios.
    pub fn ratio(&mut self, name: &str, a: &[f64], b: &[f64]) -> Option<f64> {
        let (sa, sb) = (Summary::of(a)?, Summary::of(b)?);
        let r = sa.median / sb.median;
        let pairs = paired_ratios(a, b);
        self.rows.push(Row {
            name: name.into(),
            unit: "×".into(),
            summary: Summary::of(&pairs),
            ratio_of_medians: Some(r),
            note: "ratio of medians; spread of per-pair ratios".into(),
        });
        Some(r)
    }

    pub fn note_last(&mut self, note: &str) {
        if let Some(r) = self.rows.last_mut() {
            if r.note.is_empty() {
                r.note = note.into();
            } else {
                r.note = format!("{}; {note}", r.note);
            }
        }
    }

    pub fn goal(
        &mut self,
        text: &str,
        value: Option<f64>,
        unit: &str,
        cmp: Cmp,
        threshold: f64,
        basis: &str,
    ) {
        self.goals.push(Goal {
            text: text.into(),
            value,
            unit: unit.into(),
            cmp,
            threshold,
            basis: basis.into(),
        });
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "method": self.method,
            "rows": self.rows.iter().map(|r| {
                let mut v = json!({"name": r.name, "unit": r.unit});
                if let Some(s) = &r.summary { v["stats"] = s.to_json(); }
                if let Some(x) = r.ratio_of_medians { v["ratio_of_medians"] = json!(round(x)); }
                if !r.note.is_empty() { v["note"] = json!(r.note); }
                v
            }).collect::<Vec<_>>(),
            "goals": self.goals.iter().map(goal_json).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

fn goal_json(g: &Goal) -> Value {
    json!({
        "goal": g.text,
        "value": g.value.map(round),
        "unit": g.unit,
        "comparison": match g.cmp { Cmp::AtMost => "<=", Cmp::AtLeast => ">=" },
        "threshold": g.threshold,
        "status": g.status(),
        "basis": g.basis,
    })
}

/// Where the hand-written analysis (bench/notes.md) starts in benchmarks.md.
pub const NOTES_MARKER: &str = "<!-- below: bench/notes.md, appended by ./bench/run.sh -->";

/// Replaces the analysis part of an existing benchmarks.md with `notes`.
pub fn replace_notes(md: &str, notes: &str) -> String {
    let head = md.split(NOTES_MARKER).next().unwrap_or(md).trim_end();
    format!("{head}\n\n{NOTES_MARKER}\n\n{}\n", notes.trim())
}

pub struct Report {
    pub mode: String,
    pub machine: Vec<(String, String)>,
    pub sections: Vec<Section>,
    pub seconds: f64,
}

impl Report {
    pub fn to_json(&self) -> Value {
        let machine: serde_json::Map<String, Value> = self
            .machine
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "generator": "./bench/run.sh (cargo bench --bench testbed)",
            "mode": self.mode,
            "duration_seconds": round(self.seconds),
            "machine": machine,
            "goals": self.sections.iter().flat_map(|s| s.goals.iter().map(|g| {
                let mut v = goal_json(g);
                v["section"] = json!(s.id);
                v
            })).collect::<Vec<_>>(),
            "sections": self.sections.iter().map(Section::to_json).collect::<Vec<_>>(),
        })
    }

    pub fn to_markdown(&self, notes: &str) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "# Benchmarks\n");
        let _ = writeln!(
            m,
            "Generated by `./bench/run.sh` ({} run, {:.0} s); the same figures are in \
             [benchmarks.json](benchmarks.json). Every figure is the median of repeated runs with \
             its spread (p10–p90 with 10 or more values, else min–max); every comparison is a \
             ratio of two medians measured in the same run, interleaved, with the spread of the \
             per-pair ratios. The analysis after the tables (profiles, before/after) comes from \
             `bench/notes.md`.\n",
            self.mode, self.seconds
        );
        let _ = writeln!(m, "## Machine\n\n| | |\n|---|---|");
        for (k, v) in &self.machine {
            let _ = writeln!(m, "| {k} | {} |", v.replace('|', "\\|"));
        }
        let _ = writeln!(
            m,
            "\n## Goals (and checks)\n\n| section | goal | measured | status |\n|---|---|---|---|"
        );
        for s in &self.sections {
            for g in &s.goals {
                let v = g
                    .value
                    .map(|v| format!("{} {}", fmt(v), g.unit))
                    .unwrap_or_else(|| "–".into());
                let _ = writeln!(
                    m,
                    "| {} | {} | {} ({}) | **{}** |",
                    s.id,
                    g.text,
                    v,
                    g.basis,
                    g.status()
                );
            }
        }
        for s in &self.sections {
            let _ = writeln!(m, "\n## {}. {}\n\n{}\n", s.id, s.title, s.method.trim());
            let _ = writeln!(
                m,
                "| measurement | median | spread | n | unit | note |\n|---|---:|---|---:|---|---|"
            );
            for r in &s.rows {
                let (med, spread, n) = match (&r.summary, r.ratio_of_medians) {
                    (Some(sm), Some(rm)) => (
                        fmt(rm),
                        format!("{}–{} ({})", fmt(sm.lo), fmt(sm.hi), sm.spread_kind()),
                        sm.n.to_string(),
                    ),
                    (Some(sm), None) if sm.n == 1 => (fmt(sm.median), "–".into(), "1".into()),
                    (Some(sm), None) => (
                        fmt(sm.median),
                        format!("{}–{} ({})", fmt(sm.lo), fmt(sm.hi), sm.spread_kind()),
                        sm.n.to_string(),
                    ),
                    (None, _) => ("–".into(), "–".into(), "0".into()),
                };
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} | {} |",
                    r.name, med, spread, n, r.unit, r.note
                );
            }
            if !s.goals.is_empty() {
                let _ = writeln!(m);
                for g in &s.goals {
                    let _ = writeln!(
                        m,
                        "- Goal: {} — measured {} → **{}**",
                        g.text,
                        g.value
                            .map(|v| format!("{} {}", fmt(v), g.unit))
                            .unwrap_or_else(|| "–".into()),
                        g.status()
                    );
                }
            }
            if !s.notes.is_empty() {
                let _ = writeln!(m);
                for n in &s.notes {
                    let _ = writeln!(m, "- {n}");
                }
            }
        }
        let _ = writeln!(m, "\n{NOTES_MARKER}");
        if !notes.trim().is_empty() {
            let _ = writeln!(m, "\n{}", notes.trim());
        }
        m
    }

    pub fn write(&self, dir: &Path, notes: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("benchmarks.json"),
            serde_json::to_string_pretty(&self.to_json()).expect("json") + "\n",
        )?;
        std::fs::write(dir.join("benchmarks.md"), self.to_markdown(notes))
    }
}
