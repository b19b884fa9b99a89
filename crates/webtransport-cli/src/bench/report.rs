//! Measurements and how they are shown: a table for a person, JSON lines for programs,
//! and the ratios to raw quinn with the targets.

use std::fmt::Write as _;

/// One measured number.
#[derive(Debug, Clone)]
pub struct Metric {
    /// `throughput`, `streams`, `latency`, `datagrams`, `handshakes`, `sessions`, `resumed`.
    pub scenario: &'static str,
    /// What was measured, such as `goodput` or `same_stream_p50`.
    pub metric: String,
    /// The value, in `unit`.
    pub value: f64,
    /// `Gbit/s`, `us`, `B`, ...
    pub unit: &'static str,
    /// Whether a larger value is better (throughput) or worse (latency, memory).
    pub higher_is_better: bool,
}

impl Metric {
    /// A metric where more is better.
    pub fn higher(
        scenario: &'static str,
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Metric {
            scenario,
            metric: metric.into(),
            value,
            unit,
            higher_is_better: true,
        }
    }

    /// A metric where less is better.
    pub fn lower(
        scenario: &'static str,
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Metric {
            higher_is_better: false,
            ..Self::higher(scenario, metric, value, unit)
        }
    }

    /// Whether `self` is a better value than `other` of the same metric.
    pub fn better_than(&self, other: &Metric) -> bool {
        if self.higher_is_better {
            self.value > other.value
        } else {
            self.value < other.value
        }
    }
}

/// A metric measured for one implementation.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The implementation (`webtransport`, `quinn`, ...).
    pub implementation: String,
    /// The measurement.
    pub metric: Metric,
}

/// Keeps the best value of each (implementation, scenario, metric) over several rounds,
/// in the order first seen.
#[derive(Debug, Default)]
pub struct Results {
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Results {
    /// Adds a measurement, keeping the better one when the metric is already there.
    pub fn add(&mut self, implementation: &str, metric: Metric) {
        if let Some(s) = self.samples.iter_mut().find(|s| {
            s.implementation == implementation
                && s.metric.scenario == metric.scenario
                && s.metric.metric == metric.metric
        }) {
            if metric.better_than(&s.metric) {
                s.metric = metric;
            }
            return;
        }
        self.samples.push(Sample {
            implementation: implementation.to_owned(),
            metric,
        });
    }

    /// The value of one metric of one implementation.
    pub fn value(&self, implementation: &str, scenario: &str, metric: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.implementation == implementation
                    && s.metric.scenario == scenario
                    && s.metric.metric == metric
            })
            .map(|s| s.metric.value)
    }

    /// The implementations in the order first seen.
    pub fn implementations(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.samples {
            if !out.contains(&s.implementation) {
                out.push(s.implementation.clone());
            }
        }
        out
    }

    /// (scenario, metric, unit) rows in the order first seen.
    fn rows(&self) -> Vec<(&'static str, String, &'static str)> {
        let mut out: Vec<(&'static str, String, &'static str)> = Vec::new();
        for s in &self.samples {
            if !out
                .iter()
                .any(|(sc, m, _)| *sc == s.metric.scenario && *m == s.metric.metric)
            {
                out.push((s.metric.scenario, s.metric.metric.clone(), s.metric.unit));
            }
        }
        out
    }
}

/// A goal relative to raw quinn in the same run.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// value / quinn's value >= this.
    RatioAtLeast(f64),
    /// value / quinn's value <= this.
    RatioAtMost(f64),
    /// value - quinn's value <= this (bytes per session).
    ExcessAtMost(f64),
    /// value >= this, whatever quinn's (a percentage delivered).
    AtLeast(f64),
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::RatioAtLeast(r) => format!(">= {r}"),
            Target::RatioAtMost(r) => format!("<= {r}"),
            Target::ExcessAtMost(b) => format!("+{} KiB", b / 1024.0),
            Target::AtLeast(v) => format!("value >= {v}"),
        }
    }
}

/// The performance issue's targets, by (scenario, metric). Datagrams must also arrive: at
/// least 99 % delivered, whatever quinn delivers.
pub const TARGETS: &[(&str, &str, Target)] = &[
    ("throughput", "goodput", Target::RatioAtLeast(0.95)),
    ("streams", "streams_per_s", Target::RatioAtLeast(0.95)),
    ("latency", "same_stream_p50", Target::RatioAtMost(1.05)),
    ("latency", "new_stream_p50", Target::RatioAtMost(1.05)),
    ("datagrams", "received_per_s", Target::RatioAtLeast(0.95)),
    ("datagrams", "delivered", Target::AtLeast(99.0)),
    ("handshakes", "sequential_per_s", Target::RatioAtLeast(0.8)),
    (
        "handshakes",
        "concurrent32_per_s",
        Target::RatioAtLeast(0.8),
    ),
    ("sessions", "opened_per_s", Target::RatioAtLeast(0.9)),
    ("sessions", "rss_per_session", Target::ExcessAtMost(16384.0)),
];

fn target_of(scenario: &str, metric: &str) -> Option<Target> {
    TARGETS
        .iter()
        .find(|(s, m, _)| *s == scenario && *m == metric)
        .map(|(_, _, t)| *t)
}

/// The name of the baseline implementation.
pub const BASELINE: &str = "quinn";

/// The baseline measured a second time as a stack of its own (peer-bench's
/// `quinn-again`): its ratio is the noise floor of every other, and it is no peer.
pub const BASELINE_AGAIN: &str = "quinn-again";

/// `implementation`'s value over quinn's.
pub fn ratio(results: &Results, implementation: &str, scenario: &str, metric: &str) -> Option<f64> {
    let v = results.value(implementation, scenario, metric)?;
    let base = results.value(BASELINE, scenario, metric)?;
    (base != 0.0).then(|| v / base)
}

fn meets(results: &Results, implementation: &str, scenario: &str, metric: &str) -> Option<bool> {
    let target = target_of(scenario, metric)?;
    let v = results.value(implementation, scenario, metric)?;
    // quinn's value, for the targets relative to it.
    let base = || results.value(BASELINE, scenario, metric);
    Some(match target {
        Target::RatioAtLeast(r) => v >= r * base()?,
        Target::RatioAtMost(r) => v <= r * base()?,
        Target::ExcessAtMost(b) => v - base()? <= b,
        Target::AtLeast(floor) => v >= floor,
    })
}

/// A JSON object with keys in the order given.
fn json_object(fields: &[(&str, serde_json::Value)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(*k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

fn rounded(v: f64) -> serde_json::Value {
    serde_json::Value::from((v * 1000.0).round() / 1000.0)
}

/// One JSON line per measurement:
/// `{"scenario":..,"impl":..,"metric":..,"value":..,"unit":..}`.
pub fn sample_json(s: &Sample) -> String {
    json_object(&[
        ("scenario", s.metric.scenario.into()),
        ("impl", s.implementation.clone().into()),
        ("metric", s.metric.metric.clone().into()),
        ("value", rounded(s.metric.value)),
        ("unit", s.metric.unit.into()),
    ])
}

/// The closing lines: `{"scenario":..,"impl":..,"metric":..,"ratio_to_quinn":..,...}` for
/// each metric with a target, for every implementation but quinn.
pub fn ratio_json(results: &Results) -> Vec<String> {
    let mut out = Vec::new();
    for implementation in results.implementations() {
        if implementation == BASELINE {
            continue;
        }
        for (scenario, metric, target) in TARGETS {
            let Some(r) = ratio(results, &implementation, scenario, metric) else {
                continue;
            };
            let mut fields = vec![
                ("scenario", serde_json::Value::from(*scenario)),
                ("impl", implementation.clone().into()),
                ("metric", (*metric).into()),
                ("ratio_to_quinn", rounded(r)),
            ];
            if let Target::ExcessAtMost(_) = target {
                let v = results
                    .value(&implementation, scenario, metric)
                    .unwrap_or(0.0);
                let base = results.value(BASELINE, scenario, metric).unwrap_or(0.0);
                fields.push(("excess_over_quinn", rounded(v - base)));
            }
            fields.push(("target", target.describe().into()));
            fields.push((
                "meets_target",
                meets(results, &implementation, scenario, metric).into(),
            ));
            out.push(json_object(&fields));
        }
    }
    out
}

/// How `ours` compares with one peer on one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Versus {
    pub scenario: &'static str,
    pub metric: String,
    pub peer: String,
    pub ours: f64,
    pub theirs: f64,
    /// Ours over theirs for a metric where more is better, theirs over ours otherwise:
    /// at least 1 when ours is at least as good either way.
    pub advantage: f64,
}

impl Versus {
    /// Ours is at least as good as the peer's.
    pub fn ahead(&self) -> bool {
        self.advantage >= 1.0
    }
}

/// How `ours` compares with every other implementation but quinn (measured once or
/// twice), metric by metric, peer by peer. Used by peer-bench (bench/), which includes
/// this file; `wt bench` has no peers.
#[allow(dead_code)]
pub fn versus(results: &Results, ours: &str) -> Vec<Versus> {
    let mut out = Vec::new();
    for peer in results.implementations() {
        if peer == BASELINE || peer == BASELINE_AGAIN || peer == ours {
            continue;
        }
        for s in results.samples.iter().filter(|s| s.implementation == ours) {
            let m = &s.metric;
            let Some(theirs) = results.value(&peer, m.scenario, &m.metric) else {
                continue;
            };
            let (num, den) = if m.higher_is_better {
                (m.value, theirs)
            } else {
                (theirs, m.value)
            };
            let advantage = match (num, den) {
                (0.0, 0.0) => 1.0,
                (_, 0.0) => f64::INFINITY,
                _ => num / den,
            };
            out.push(Versus {
                scenario: m.scenario,
                metric: m.metric.clone(),
                peer: peer.clone(),
                ours: m.value,
                theirs,
                advantage,
            });
        }
    }
    out
}

/// [`versus`] as JSON lines: `{"scenario":..,"metric":..,"impl":ours,"versus":peer,
/// "ours":..,"theirs":..,"advantage":..,"ahead":..}`.
#[allow(dead_code)]
pub fn versus_json(results: &Results, ours: &str) -> Vec<String> {
    versus(results, ours)
        .iter()
        .map(|v| {
            json_object(&[
                ("scenario", v.scenario.into()),
                ("metric", v.metric.clone().into()),
                ("impl", ours.into()),
                ("versus", v.peer.clone().into()),
                ("ours", rounded(v.ours)),
                ("theirs", rounded(v.theirs)),
                ("advantage", rounded(v.advantage)),
                ("ahead", v.ahead().into()),
            ])
        })
        .collect()
}

/// One line per peer: where `ours` is behind it (from [`versus`]), or that it is behind on
/// nothing. peer-bench's, as [`versus`].
#[allow(dead_code)]
pub fn versus_summary(results: &Results, ours: &str) -> String {
    let mut behind: Vec<(String, Vec<String>)> = Vec::new();
    for v in versus(results, ours) {
        let at = match behind.iter().position(|(p, _)| *p == v.peer) {
            Some(i) => i,
            None => {
                behind.push((v.peer.clone(), Vec::new()));
                behind.len() - 1
            }
        };
        if !v.ahead() {
            behind[at]
                .1
                .push(format!("{} {} ({:.3})", v.scenario, v.metric, v.advantage));
        }
    }
    let mut out = String::new();
    for (peer, list) in behind {
        if list.is_empty() {
            let _ = writeln!(out, "{ours} vs {peer}: at least as good on every metric");
        } else {
            let _ = writeln!(out, "{ours} vs {peer}: behind on {}", list.join(", "));
        }
    }
    out
}

fn format_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100_000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A table for a person: one row per metric, a column per implementation, then each
/// implementation's ratio to quinn and the target.
pub fn table(results: &Results) -> String {
    let impls = results.implementations();
    let others: Vec<&String> = impls.iter().filter(|i| *i != BASELINE).collect();
    let mut header: Vec<String> = vec!["scenario".into(), "metric".into(), "unit".into()];
    header.extend(impls.iter().cloned());
    if impls.iter().any(|i| i == BASELINE) {
        header.extend(others.iter().map(|i| format!("{i}/quinn")));
        header.push("target".into());
    }
    let mut rows = vec![header];
    for (scenario, metric, unit) in results.rows() {
        let mut row = vec![scenario.to_owned(), metric.clone(), unit.to_owned()];
        for i in &impls {
            row.push(
                results
                    .value(i, scenario, &metric)
                    .map(format_value)
                    .unwrap_or_else(|| "-".into()),
            );
        }
        if impls.iter().any(|i| i == BASELINE) {
            for i in &others {
                let cell = match ratio(results, i, scenario, &metric) {
                    Some(r) => {
                        let mark = match meets(results, i, scenario, &metric) {
                            Some(true) => " ok",
                            Some(false) => " !!",
                            None => "",
                        };
                        format!("{r:.2}{mark}")
                    }
                    None => "-".into(),
                };
                row.push(cell);
            }
            row.push(
                target_of(scenario, &metric)
                    .map(Target::describe)
                    .unwrap_or_default(),
            );
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            // Text left, numbers right.
            if c < 3 {
                let _ = write!(line, "{cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(line, "{cell:>w$}", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if n == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}
