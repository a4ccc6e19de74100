//! Reads the raw results of `scripts/bench.sh` and writes `BENCHMARKS.md` and the latency plot.
//!
//! Layout of a results directory (what the script writes):
//!
//! ```text
//! machine.txt                      key: value lines (CPU, memory, etcd version, load, …)
//! commands.txt                     the command lines that were run
//! cpu.tsv                          round impl scenario wall_s etcd_cpu_s client_cpu_s
//! rounds/<n>/<impl>.jsonl          JSON lines; impl = ours | go | etcd-client | go-latency | mem
//! rounds/<n>/lat/<impl>/<scenario>.txt   raw latencies in ms, one per line
//! ```
//!
//! Medians are taken over rounds; every ratio is first taken within one round (the anchors
//! and ours ran alternately against the same etcd), then the median of those is reported with
//! its range.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::stats::{median, pct_of, BenchResult};

/// Errors of the report generator.
pub type ReportError = Box<dyn std::error::Error + Send + Sync>;

/// One row of `cpu.tsv`.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuRow {
    /// Round number.
    pub round: usize,
    /// `ours`, `go`, …
    pub imp: String,
    /// Full scenario name.
    pub scenario: String,
    /// Wall time of the process, seconds.
    pub wall_s: f64,
    /// CPU time etcd used meanwhile, seconds.
    pub etcd_cpu_s: f64,
    /// CPU time of the benchmark process, seconds.
    pub client_cpu_s: f64,
}

/// Everything one results directory holds.
#[derive(Debug, Default)]
pub struct Results {
    /// The directory.
    pub dir: PathBuf,
    /// `machine.txt`, in order.
    pub machine: Vec<(String, String)>,
    /// `commands.txt`.
    pub commands: String,
    /// Rounds: round number → implementation → results.
    pub rounds: BTreeMap<usize, BTreeMap<String, Vec<BenchResult>>>,
    /// `cpu.tsv`.
    pub cpu: Vec<CpuRow>,
}

impl Results {
    /// Reads a results directory.
    pub fn load(dir: &Path) -> Result<Results, ReportError> {
        let mut out = Results {
            dir: dir.to_path_buf(),
            ..Results::default()
        };
        if let Ok(text) = std::fs::read_to_string(dir.join("machine.txt")) {
            for line in text.lines() {
                if let Some((k, v)) = line.split_once(':') {
                    out.machine
                        .push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
        out.commands = std::fs::read_to_string(dir.join("commands.txt")).unwrap_or_default();
        if let Ok(text) = std::fs::read_to_string(dir.join("cpu.tsv")) {
            for line in text.lines() {
                let f: Vec<&str> = line.split('\t').collect();
                if f.len() < 6 || f[0] == "round" {
                    continue;
                }
                let num = |s: &str| s.trim().parse::<f64>().unwrap_or(f64::NAN);
                out.cpu.push(CpuRow {
                    round: f[0].parse().unwrap_or(0),
                    imp: f[1].to_string(),
                    scenario: f[2].to_string(),
                    wall_s: num(f[3]),
                    etcd_cpu_s: num(f[4]),
                    client_cpu_s: num(f[5]),
                });
            }
        }
        let rounds_dir = dir.join("rounds");
        let entries = std::fs::read_dir(&rounds_dir)
            .map_err(|e| format!("cannot read {}: {e}", rounds_dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let Ok(n) = entry.file_name().to_string_lossy().parse::<usize>() else {
                continue;
            };
            let mut by_impl = BTreeMap::new();
            for file in std::fs::read_dir(entry.path())? {
                let path = file?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                    continue;
                }
                let imp = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let text = std::fs::read_to_string(&path)?;
                let results: Vec<BenchResult> = text
                    .lines()
                    .filter_map(|l| serde_json::from_str(l.trim()).ok())
                    .collect();
                by_impl.insert(imp, results);
            }
            out.rounds.insert(n, by_impl);
        }
        Ok(out)
    }

    /// The result of `scenario` by `imp` in round `round` (the last one if it ran twice).
    pub fn get(&self, round: usize, imp: &str, scenario: &str) -> Option<&BenchResult> {
        self.rounds
            .get(&round)?
            .get(imp)?
            .iter()
            .rev()
            .find(|r| r.scenario == scenario)
    }

    /// `f` of `scenario` by `imp`, one value per round where it ran.
    pub fn series(
        &self,
        imp: &str,
        scenario: &str,
        f: impl Fn(&BenchResult) -> Option<f64>,
    ) -> Vec<f64> {
        self.rounds
            .keys()
            .filter_map(|&n| self.get(n, imp, scenario).and_then(&f))
            .collect()
    }

    /// The median over rounds of `f`.
    pub fn med(
        &self,
        imp: &str,
        scenario: &str,
        f: impl Fn(&BenchResult) -> Option<f64>,
    ) -> Option<f64> {
        median(&self.series(imp, scenario, f))
    }

    /// Per-round ratios `f(a) / f(b)` (rounds where both ran).
    pub fn ratios(
        &self,
        a: (&str, &str),
        b: (&str, &str),
        f: impl Fn(&BenchResult) -> Option<f64>,
    ) -> Vec<f64> {
        self.rounds
            .keys()
            .filter_map(|&n| {
                let x = self.get(n, a.0, a.1).and_then(&f)?;
                let y = self.get(n, b.0, b.1).and_then(&f)?;
                (y != 0.0).then_some(x / y)
            })
            .collect()
    }

    /// Raw latencies of `scenario` by `imp`, pooled over rounds.
    pub fn latencies(&self, imp: &str, scenario: &str) -> Vec<f64> {
        let mut out = Vec::new();
        for n in self.rounds.keys() {
            let path = self
                .dir
                .join("rounds")
                .join(n.to_string())
                .join("lat")
                .join(imp)
                .join(format!("{scenario}.txt"));
            if let Ok(text) = std::fs::read_to_string(path) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<f64>().ok()));
            }
        }
        out
    }

    pub(crate) fn machine(&self, key: &str) -> Option<&str> {
        self.machine
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// CPU per operation (ms) of `imp` in `scenario`: (etcd, client), medians over rounds.
    pub fn cpu_per_op(&self, imp: &str, scenario: &str) -> Option<(f64, f64)> {
        let mut etcd = Vec::new();
        let mut client = Vec::new();
        for row in self
            .cpu
            .iter()
            .filter(|r| r.imp == imp && r.scenario == scenario)
        {
            let ops = self.get(row.round, imp, scenario)?.ops as f64;
            if ops > 0.0 {
                etcd.push(row.etcd_cpu_s * 1000.0 / ops);
                client.push(row.client_cpu_s * 1000.0 / ops);
            }
        }
        Some((median(&etcd)?, median(&client)?))
    }

    fn cpu_row(&self, imp: &str, scenario: &str) -> Option<(f64, f64, f64)> {
        let rows: Vec<&CpuRow> = self
            .cpu
            .iter()
            .filter(|r| r.imp == imp && r.scenario == scenario)
            .collect();
        Some((
            median(&rows.iter().map(|r| r.wall_s).collect::<Vec<_>>())?,
            median(&rows.iter().map(|r| r.etcd_cpu_s).collect::<Vec<_>>())?,
            median(&rows.iter().map(|r| r.client_cpu_s).collect::<Vec<_>>())?,
        ))
    }
}

fn ops(r: &BenchResult) -> Option<f64> {
    (r.ops_per_s > 0.0).then_some(r.ops_per_s)
}
fn p50(r: &BenchResult) -> Option<f64> {
    (r.p50_ms > 0.0).then_some(r.p50_ms)
}
fn p99(r: &BenchResult) -> Option<f64> {
    (r.p99_ms > 0.0).then_some(r.p99_ms)
}

/// A number for a table: adapts the decimals to the size.
pub fn num(x: Option<f64>) -> String {
    match x {
        None => "–".to_string(),
        Some(x) if x.is_nan() => "–".to_string(),
        Some(x) if x.abs() >= 1000.0 => {
            // Thousands separators.
            let s = format!("{:.0}", x);
            let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            format!("{sign}{out}")
        }
        Some(x) if x.abs() >= 100.0 || x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) if x.abs() >= 1.0 => format!("{x:.2}"),
        Some(x) => format!("{x:.3}"),
    }
}

/// A ratio: median of per-round ratios with its range, e.g. `6.4x (6.1–6.9)`.
pub fn ratio(values: &[f64]) -> String {
    let Some(m) = median(values) else {
        return "–".to_string();
    };
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() > 1 {
        format!("{}x ({}–{})", num(Some(m)), num(Some(lo)), num(Some(hi)))
    } else {
        format!("{}x", num(Some(m)))
    }
}

/// A target's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// What is promised.
    pub what: String,
    /// What was measured.
    pub measured: String,
    /// `Some(true)` pass, `Some(false)` fail, `None` not measured.
    pub pass: Option<bool>,
}

/// Per round: `s`'s p50 over the `watch_floor` measured back to back.
fn vs_back_to_back_floor(r: &Results, s: &str) -> Vec<f64> {
    r.ratios(("ours", s), ("ours", "watch_floor"), |x| {
        if x.scenario == "watch_floor" {
            x.extra_f64("back_to_back_p50_ms")
        } else {
            p50(x)
        }
    })
}

fn verdict(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "**pass**",
        Some(false) => "**FAIL**",
        None => "not measured",
    }
}

const W: usize = 8;

/// Contending sessions of the `mutex_contended_wN` sweep (issue 11).
pub const SWEEP: [usize; 6] = [2, 8, 32, 64, 128, 256];

/// Watch events every session received, per acquisition (one release each), from the calls
/// `coord-bench` counts.
fn events_per_release(r: &BenchResult) -> Option<f64> {
    r.extra.get("calls")?.get("watch_events_per_op")?.as_f64()
}

/// The lowest of `ratio_at(N)` over the sweep's N, with that N (the first, on a tie).
fn lowest_over_sweep(ratio_at: impl Fn(usize) -> Option<f64>) -> Option<(usize, f64)> {
    SWEEP
        .iter()
        .filter_map(|&w| ratio_at(w).map(|m| (w, m)))
        .fold(None, |a, x| match a {
            Some(a) if a.1 <= x.1 => Some(a),
            _ => Some(x),
        })
}

/// Evaluates the targets of issue 5 (and coord-mem's of issue 2).
pub fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let contended = format!("mutex_contended_w{W}");
    let rw = format!("rwmutex_mixed_w{W}");
    for s in ["mutex_handoff", "election_resign_handoff"] {
        let vs_go = r.ratios(("go", s), ("ours", s), p50);
        let m = median(&vs_go);
        out.push(Target {
            what: format!("`{s}` p50 at least 10x lower than Go's"),
            measured: format!("Go p50 / ours p50 = {}", ratio(&vs_go)),
            pass: m.map(|m| m >= 10.0),
        });
        let vs_floor = r.ratios(("ours", s), ("ours", "watch_floor"), p50);
        let m = median(&vs_floor);
        out.push(Target {
            what: format!(
                "`{s}` p50 at most 2x `watch_floor` p50 (floor measured as the handoff runs: \
                 each delete after 50 ms idle)"
            ),
            measured: format!("ours p50 / floor p50 = {}", ratio(&vs_floor)),
            pass: m.map(|m| m <= 2.0),
        });
    }
    for s in [contended.as_str(), rw.as_str()] {
        let v = r.ratios(("ours", s), ("go", s), ops);
        let m = median(&v);
        out.push(Target {
            what: format!("`{s}` throughput at least 6x Go's"),
            measured: format!("ours / Go ops/s = {}", ratio(&v)),
            pass: m.map(|m| m >= 6.0),
        });
    }
    let s = "mutex_uncontended_lock_unlock";
    let v = r.ratios(("ours", s), ("go", s), ops);
    out.push(Target {
        what: format!("`{s}` throughput at least 1.0x Go's"),
        measured: format!("ours / Go ops/s = {}", ratio(&v)),
        pass: median(&v).map(|m| m >= 1.0),
    });
    let s = "election_crash_failover";
    let worst = r
        .series("ours", s, |x| x.extra_f64("from_last_renewal_max_ms"))
        .into_iter()
        .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
    let ttl = r.med("ours", s, |x| x.extra_f64("ttl_s"));
    out.push(Target {
        what: format!("`{s}`: new leader at most TTL + 1 s after the leader's last renewal"),
        measured: match (worst, ttl) {
            (Some(w), Some(t)) => format!(
                "worst {} ms with TTL {} s (limit {} ms)",
                num(Some(w)),
                t,
                num(Some(t * 1000.0 + 1000.0))
            ),
            _ => "–".to_string(),
        },
        pass: match (worst, ttl) {
            (Some(w), Some(t)) => Some(w <= t * 1000.0 + 1000.0),
            _ => None,
        },
    });
    let mem_ops = r.med("mem", "mutex_uncontended_lock_unlock", ops);
    out.push(Target {
        what: "coord-mem uncontended lock+unlock at least 200,000/s on one core".to_string(),
        measured: format!("{} ops/s (current-thread runtime)", num(mem_ops)),
        pass: mem_ops.map(|m| m >= 200_000.0),
    });
    let calls = r.med("mem", "mem_calls_per_release_w1000", |x| {
        x.extra_f64("max_calls_in_one_release")
    });
    let others = r.med("mem", "mem_calls_per_release_w1000", |x| {
        x.extra_f64("other_waiters_calls_per_release")
    });
    out.push(Target {
        what: "coord-mem, 1,000 waiters: a release costs only the releaser's and the next waiter's calls"
            .to_string(),
        measured: format!(
            "at most {} calls per release; other waiters {} calls",
            num(calls),
            num(others)
        ),
        pass: calls.zip(others).map(|(c, o)| c <= 2.0 && o == 0.0),
    });
    // Issue 11: scaling with contenders.
    let at8 = format!("mutex_contended_w{W}");
    let worst_flat = lowest_over_sweep(|w| {
        let s = format!("mutex_contended_w{w}");
        median(&r.ratios(("ours", &s), ("ours", &at8), ops))
    });
    out.push(Target {
        what: "`mutex_contended_wN`, N = 2 … 256: ours at every N at least 0.6x ours at 8".into(),
        measured: match worst_flat {
            Some((w, m)) => format!("lowest: {} at N = {w}", num(Some(m))),
            None => "–".into(),
        },
        pass: worst_flat.map(|(_, m)| m >= 0.6),
    });
    let worst_go = lowest_over_sweep(|w| {
        let s = format!("mutex_contended_w{w}");
        median(&r.ratios(("ours", &s), ("go", &s), ops))
    });
    // What the floor (two writes per acquisition, no watch, no read) reaches against Go at
    // the N where it is lowest: a lock above it is impossible on this etcd.
    let floor_go = lowest_over_sweep(|w| {
        let (s, f) = (
            format!("mutex_contended_w{w}"),
            format!("mutex_write_floor_w{w}"),
        );
        median(&r.ratios(("floor", &f), ("go", &s), ops))
    });
    out.push(Target {
        what: "`mutex_contended_wN`, N = 2 … 256: ours at least 2x Go at every N".into(),
        measured: match (worst_go, floor_go) {
            (Some((w, m)), Some((fw, f))) => format!(
                "lowest: {}x at N = {w}; the floor (two writes per acquisition, no watch, no \
                 read) is {}x Go at N = {fw}",
                num(Some(m)),
                num(Some(f))
            ),
            (Some((w, m)), None) => format!("lowest: {}x at N = {w}", num(Some(m))),
            _ => "–".into(),
        },
        pass: worst_go.map(|(_, m)| m >= 2.0),
    });
    let events: Vec<(usize, f64)> = SWEEP
        .iter()
        .filter_map(|&w| {
            let s = format!("mutex_contended_w{w}");
            let v = r.series("ours", &s, events_per_release);
            v.into_iter().reduce(f64::max).map(|m| (w, m))
        })
        .collect();
    let most = events.iter().map(|(_, e)| *e).reduce(f64::max);
    out.push(Target {
        what: "`mutex_contended_wN`: watch events per release at most 2 at every N".into(),
        measured: match most {
            Some(m) => format!("at most {} (over every N and round)", num(Some(m))),
            None => "–".into(),
        },
        pass: most.map(|m| m <= 2.0),
    });
    let s = "mem_calls_per_release_w10000";
    let calls = r.med("mem", s, |x| x.extra_f64("max_calls_in_one_release"));
    let ev = r.med("mem", s, |x| x.extra_f64("max_watch_events_in_one_release"));
    let lat = r.med("mem", s, p50);
    out.push(Target {
        what:
            "coord-mem, 10,000 waiters on one mutex: at most 2 calls and 2 watch events per release"
                .to_string(),
        measured: format!(
            "at most {} calls and {} events in one release; p50 {} ms unlock → next holder",
            num(calls),
            num(ev),
            num(lat)
        ),
        pass: calls.zip(ev).map(|(c, e)| c <= 2.0 && e <= 2.0),
    });
    let mratio = r.med("mem", "mem_memory_cycles", |x| x.extra_f64("ratio"));
    out.push(Target {
        what: "coord-mem live heap after 1,000,000 cycles < 2x after 10,000".to_string(),
        measured: format!("ratio {}", num(mratio)),
        pass: mratio.map(|m| m < 2.0),
    });
    out
}

/// Renders `BENCHMARKS.md`. `plot` and `scaling` are the plots' paths relative to the Markdown
/// file (latency CDFs, throughput against contenders); `notes` is hand-written analysis
/// appended as it is.
pub fn render(r: &Results, plot: Option<&str>, scaling: Option<&str>, notes: &str) -> String {
    let mut md = String::new();
    let rounds = r.rounds.len();
    let m = |k: &str| r.machine(k).unwrap_or("?").to_string();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Generated by `coord-bench-report` from the raw results in `{}` (written by \
         `scripts/bench.sh`); do not edit by hand — edit `bench/notes.md` for the analysis at \
         the end.\n",
        r.dir
            .file_name()
            .map(|_| r.dir.display().to_string())
            .unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "Ours (`coord`, crate `coord-bench`), etcd's Go `clientv3/concurrency` package (anchor \
         `go-etcd-bench`) and `etcd-client`'s server-side Lock/Election API (anchor \
         `rust-etcd-client-lock`) ran **alternately, {rounds} round{}, against one etcd**, in the \
         same run. Each table cell is the median over rounds; each ratio is taken within a round \
         first, then the median (range) over rounds is given — absolute times on this shared \
         machine are noisy, ratios less so.\n",
        if rounds == 1 { "" } else { "s" }
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    for (k, v) in &r.machine {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md);

    // Main table.
    let _ = writeln!(md, "## Results (etcd)\n");
    let _ = writeln!(
        md,
        "| scenario | metric | ours | Go concurrency | etcd-client lock | ours vs Go | ours vs etcd-client |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
    let contended = format!("mutex_contended_w{W}");
    let rw = format!("rwmutex_mixed_w{W}");
    type Metric = fn(&BenchResult) -> Option<f64>;
    let rows: Vec<(&str, &str, Metric, bool)> = vec![
        ("mutex_uncontended_lock_unlock", "ops/s", ops, true),
        (
            "mutex_uncontended_lock_unlock",
            "p50 ms (lock+unlock)",
            p50,
            false,
        ),
        (&contended, "ops/s", ops, true),
        (&contended, "p50 ms (acquire wait)", p50, false),
        (&contended, "p99 ms (acquire wait)", p99, false),
        (&rw, "ops/s", ops, true),
        ("mutex_handoff", "p50 ms", p50, false),
        ("mutex_handoff", "p99 ms", p99, false),
        ("election_resign_handoff", "p50 ms", p50, false),
        ("election_resign_handoff", "p99 ms", p99, false),
        (
            "election_crash_failover",
            "p50 ms (crash → new leader)",
            p50,
            false,
        ),
        (
            "watch_floor",
            "p50 ms (delete → event, after 50 ms idle)",
            p50,
            false,
        ),
        ("watch_floor", "p99 ms (after 50 ms idle)", p99, false),
        (
            "watch_floor",
            "p50 ms (back to back)",
            |x| x.extra_f64("back_to_back_p50_ms"),
            false,
        ),
        (
            "round_trips",
            "p50 ms (read txn)",
            |x| x.extra_f64("read_txn_p50_ms"),
            false,
        ),
        (
            "round_trips",
            "p50 ms (create txn: put + range)",
            |x| x.extra_f64("create_txn_p50_ms"),
            false,
        ),
        (
            "round_trips",
            "p50 ms (guarded delete txn)",
            |x| x.extra_f64("delete_txn_p50_ms"),
            false,
        ),
        (
            "round_trips",
            "p50 ms (plain delete, as Go unlocks)",
            |x| x.extra_f64("plain_delete_p50_ms"),
            false,
        ),
    ];
    for (s, metric, f, higher_better) in rows {
        let ours = r.med("ours", s, f);
        let go = r.med("go", s, f);
        let ec = r.med("etcd-client", s, f);
        let (vs_go, vs_ec) = if higher_better {
            (
                r.ratios(("ours", s), ("go", s), f),
                r.ratios(("ours", s), ("etcd-client", s), f),
            )
        } else {
            (
                r.ratios(("go", s), ("ours", s), f),
                r.ratios(("etcd-client", s), ("ours", s), f),
            )
        };
        let label = |v: &[f64]| match median(v) {
            None => "–".to_string(),
            Some(_) if higher_better => ratio(v),
            Some(m) if m >= 1.0 => format!("{} lower", ratio(v)),
            Some(_) => {
                let inverse: Vec<f64> = v.iter().map(|x| 1.0 / x).collect();
                format!("{} higher", ratio(&inverse))
            }
        };
        let _ = writeln!(
            md,
            "| `{s}` | {metric} | {} | {} | {} | {} | {} |",
            num(ours),
            num(go),
            num(ec),
            label(&vs_go),
            label(&vs_ec)
        );
    }
    let _ = writeln!(
        md,
        "\n\"x lower\" is anchor latency / our latency; throughput ratios are ours / anchor. \
         The Go anchor prints no latency for `rwmutex_mixed`; etcd-client's has no RwLock and \
         no `mutex_handoff`. `election_crash_failover`, `watch_floor` and `round_trips` (single requests of the shapes a \
         handoff is made of, back to back on one connection) are ours alone.\n"
    );

    // Targets.
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | measured | verdict |\n|---|---|---|");
    for t in targets(r) {
        let _ = writeln!(md, "| {} | {} | {} |", t.what, t.measured, verdict(t.pass));
    }
    let warm: Vec<String> = ["mutex_handoff", "election_resign_handoff"]
        .iter()
        .map(|s| format!("`{s}` {}", ratio(&vs_back_to_back_floor(r, s))))
        .collect();
    let _ = writeln!(
        md,
        "\nFor comparison, not a target: handoff p50 / `watch_floor` p50 measured back to back \
         (deletes with no idle gap, a condition no handoff of these scenarios runs in) = {}.\n",
        warm.join(", ")
    );

    if let Some(plot) = plot {
        let _ = writeln!(md, "## Latency distributions\n");
        let _ = writeln!(
            md,
            "Acquire wait, ours vs Go's `concurrency.Mutex`, all samples of all rounds (Go's raw \
             samples come from `bench/go-latency`, which runs the anchor's two scenarios and \
             dumps every sample; its medians are in the table below the plot).\n"
        );
        let _ = writeln!(md, "![latency CDFs]({plot})\n");
        let _ = writeln!(md, "| scenario | samples ours / Go | ours p50 / p90 / p99 / max ms | Go p50 / p90 / p99 / max ms |");
        let _ = writeln!(md, "|---|---|---|---|");
        for s in [contended.as_str(), "mutex_handoff"] {
            let o = r.latencies("ours", s);
            let g = r.latencies("go", s);
            let q = |v: &[f64]| {
                if v.is_empty() {
                    "–".to_string()
                } else {
                    format!(
                        "{} / {} / {} / {}",
                        num(Some(pct_of(v, 0.5))),
                        num(Some(pct_of(v, 0.9))),
                        num(Some(pct_of(v, 0.99))),
                        num(Some(pct_of(v, 1.0)))
                    )
                }
            };
            let _ = writeln!(
                md,
                "| `{s}` | {} / {} | {} | {} |",
                o.len(),
                g.len(),
                q(&o),
                q(&g)
            );
        }
        let _ = writeln!(md);
    }

    // Calls per operation.
    let _ = writeln!(md, "## Calls per operation (ours, on etcd)\n");
    let _ = writeln!(
        md,
        "Counted by `coord_core::Counting` around each session's backend; pinned by \
         `crates/coord-bench/tests/calls.rs` on coord-mem and on etcd, so they cannot creep.\n"
    );
    let _ = writeln!(md, "| scenario | calls |\n|---|---|");
    let ex = |s: &str, k: &str| {
        r.rounds
            .keys()
            .rev()
            .find_map(|&n| r.get(n, "ours", s).and_then(|x| x.extra.get(k).cloned()))
    };
    let show = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => num(n.as_f64()),
        Some(other) => other.to_string(),
        None => "–".to_string(),
    };
    let _ = writeln!(
        md,
        "| first lock + unlock of a session on a name | {} (an uncontended acquire opens no watch) |",
        show(ex("mutex_uncontended_lock_unlock", "first_lock_unlock_calls"))
    );
    let _ = writeln!(
        md,
        "| then each uncontended lock + unlock | {} txn (one to lock, one to unlock) |",
        show(ex("mutex_uncontended_lock_unlock", "txn_per_lock_unlock"))
    );
    let _ = writeln!(
        md,
        "| `mutex_handoff`: the releasing holder | {} call (the unlock txn) |",
        show(ex("mutex_handoff", "releaser_calls_per_handoff"))
    );
    let _ = writeln!(
        md,
        "| `mutex_handoff`: the waiter, from release to holding | {} calls, {} watch event (one key ahead at its acquire: it waited on its name's prefix watch, so the delete is the handoff; further back: one read txn after the delete of the key just ahead) |",
        show(ex("mutex_handoff", "waiter_calls_per_handoff")),
        show(ex("mutex_handoff", "waiter_watch_events_per_handoff"))
    );
    let _ = writeln!(
        md,
        "| `election_resign_handoff`: the follower, from resign to elected | {} calls (second in line, as in `mutex_handoff`) |",
        show(ex("election_resign_handoff", "follower_calls_per_handoff"))
    );
    for s in [contended.as_str(), rw.as_str()] {
        let c = ex(s, "calls");
        let get = |k: &str| c.as_ref().and_then(|c| c.get(k).cloned());
        let _ = writeln!(
            md,
            "| `{s}`, per acquisition (lock + unlock, all sessions) | {} txn, {} watches opened; {} watch events received (a release reaches the waiter just behind it); all: {} |",
            show(get("txn_per_op")),
            show(get("watches_opened_per_op")),
            show(get("watch_events_per_op")),
            show(get("total"))
        );
    }
    for (s, n) in [
        ("mem_calls_per_release_w1000", "1,000"),
        ("mem_calls_per_release_w10000", "10,000"),
    ] {
        if r.med("mem", s, |x| x.extra_f64("calls_per_release"))
            .is_none()
        {
            continue;
        }
        let _ = writeln!(
            md,
            "| coord-mem, {n} waiters on one mutex, per release | {} calls: releaser {}, next waiter {}, the other waiters {}; {} watch events |",
            num(r.med("mem", s, |x| x.extra_f64("calls_per_release"))),
            num(r.med("mem", s, |x| x.extra_f64("releaser_calls_per_release"))),
            num(r.med("mem", s, |x| x.extra_f64("next_waiter_calls_per_release"))),
            num(r.med("mem", s, |x| x.extra_f64("other_waiters_calls_per_release"))),
            num(r.med("mem", s, |x| x.extra_f64("watch_events_per_release"))),
        );
    }
    let _ = writeln!(md);

    // Handoff breakdown.
    let _ = writeln!(md, "## Where the time goes: one handoff, step by step\n");
    let _ = writeln!(
        md,
        "`mutex_handoff` timestamps both sessions' backend calls and watch events (the \
         `Timeline` adapter of coord-bench); medians over rounds of each round's p50, in ms. A \
         step is 0 when it did not happen (no read).\n"
    );
    let _ = writeln!(md, "| step | p50 ms |\n|---|---:|");
    for (k, label) in [
        ("unlock_txn", "the holder's unlock txn (call → answer)"),
        (
            "unlock_call_to_event_at_waiter",
            "the holder's unlock call → the delete event reaches the waiter's session",
        ),
        (
            "event_to_waiter_read_sent",
            "event → the waiter sends a read (only when it must read)",
        ),
        (
            "waiter_read_txn",
            "the waiter's read txn (only when it must read)",
        ),
        (
            "event_or_read_to_lock_returned",
            "the event (or the read's answer) → `lock()` returns",
        ),
    ] {
        let v = r.med("ours", "mutex_handoff", |x| {
            x.extra.get("breakdown_p50_ms")?.get(k)?.as_f64()
        });
        let _ = writeln!(md, "| {label} | {} |", num(v));
    }
    let _ = writeln!(
        md,
        "| whole handoff (unlock call → `lock()` returned) | {} |",
        num(r.med("ours", "mutex_handoff", p50))
    );
    let _ = writeln!(
        md,
        "| for comparison: `watch_floor` after 50 ms idle / back to back | {} / {} |\n",
        num(r.med("ours", "watch_floor", p50)),
        num(r.med("ours", "watch_floor", |x| x
            .extra_f64("back_to_back_p50_ms")))
    );

    // CPU.
    let _ = writeln!(
        md,
        "## Where the time goes: CPU of etcd and of the client\n"
    );
    let _ = writeln!(
        md,
        "CPU time of the etcd process (`/proc/<pid>/stat`) and of the benchmark process \
         (`times`) over each scenario's run, divided by its operations; medians over rounds. \
         The machine has {} cores: etcd and the client share them.\n",
        m("cores")
    );
    let _ = writeln!(
        md,
        "| scenario | impl | ops | wall s | etcd CPU s | client CPU s | etcd CPU ms/op | client CPU ms/op |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
    let mut scen: Vec<String> = r.cpu.iter().map(|c| c.scenario.clone()).collect();
    scen.sort();
    scen.dedup();
    for s in &scen {
        for imp in ["ours", "go", "floor"] {
            let Some((wall, ecpu, ccpu)) = r.cpu_row(imp, s) else {
                continue;
            };
            let per = r.cpu_per_op(imp, s);
            let _ = writeln!(
                md,
                "| `{s}` | {imp} | {} | {} | {} | {} | {} | {} |",
                num(r.med(imp, s, |x| Some(x.ops as f64))),
                num(Some(wall)),
                num(Some(ecpu)),
                num(Some(ccpu)),
                num(per.map(|p| p.0)),
                num(per.map(|p| p.1))
            );
        }
    }
    let _ = writeln!(md);

    // Scaling.
    let _ = writeln!(md, "## Scaling with contenders (`mutex_contended_wN`)\n");
    let _ = writeln!(
        md,
        "N sessions on one mutex, at least 10 acquisitions each, ours and Go alternately \
         (issue 11). \"vs ours at 8\" is ours at N / ours at 8 within a round; \"events\" are \
         the watch events all sessions received per release (median over rounds). The \
         \"floor\" (`coord-bench --scenario mutex_write_floor`, run beside them) is the most any \
         lock on the key layout shared with Go can do on this etcd: N sessions, each on its own \
         connection, make only the two writes no such lock can skip (our acquire transaction, \
         and the delete guarded by the key's create revision) and pass the turn in-process, in \
         revision order, once the delete has committed: no watch, no read.\n"
    );
    if let Some(plot) = scaling {
        let _ = writeln!(md, "![ops/s against sessions]({plot})\n");
    }
    let _ = writeln!(
        md,
        "| sessions | ours ops/s | Go ops/s | ours / Go | floor ops/s | floor / Go | ours / floor | ours vs ours at 8 | events per release (ours) | ours p50 wait ms | Go p50 wait ms | ours p99 wait ms | Go p99 wait ms |"
    );
    let _ = writeln!(
        md,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let at8 = format!("mutex_contended_w{W}");
    for w in SWEEP {
        let s = format!("mutex_contended_w{w}");
        if r.med("ours", &s, ops).is_none() && r.med("go", &s, ops).is_none() {
            continue;
        }
        let floor = format!("mutex_write_floor_w{w}");
        let _ = writeln!(
            md,
            "| {w} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(r.med("ours", &s, ops)),
            num(r.med("go", &s, ops)),
            ratio(&r.ratios(("ours", &s), ("go", &s), ops)),
            num(r.med("floor", &floor, ops)),
            ratio(&r.ratios(("floor", &floor), ("go", &s), ops)),
            ratio(&r.ratios(("ours", &s), ("floor", &floor), ops)),
            ratio(&r.ratios(("ours", &s), ("ours", &at8), ops)),
            num(r.med("ours", &s, events_per_release)),
            num(r.med("ours", &s, p50)),
            num(r.med("go", &s, p50)),
            num(r.med("ours", &s, p99)),
            num(r.med("go", &s, p99)),
        );
    }
    let _ = writeln!(md);

    // coord-mem.
    let _ = writeln!(md, "## coord-mem\n");
    let _ = writeln!(
        md,
        "`coord-bench --backend mem`, on tokio's current-thread runtime (one core), same \
         scenarios, more iterations (see the commands below).\n"
    );
    let _ = writeln!(
        md,
        "| scenario | ops/s | p50 ms | p99 ms | notes |\n|---|---:|---:|---:|---|"
    );
    let mem_results: Vec<String> = r
        .rounds
        .values()
        .flat_map(|m| m.get("mem").into_iter().flatten())
        .map(|x| x.scenario.clone())
        .fold(Vec::new(), |mut v, s| {
            if !v.contains(&s) {
                v.push(s);
            }
            v
        });
    for s in &mem_results {
        let note = match s.as_str() {
            "mem_calls_per_release_w1000" | "mem_calls_per_release_w10000" => format!(
                "latency = unlock → next holder with {} sessions waiting; {} calls and {} watch \
                 events per release",
                num(r.med("mem", s, |x| x.extra_f64("waiters"))),
                num(r.med("mem", s, |x| x.extra_f64("calls_per_release"))),
                num(r.med("mem", s, |x| x.extra_f64("watch_events_per_release")))
            ),
            "mem_memory_cycles" => format!(
                "live heap {} B after 10,000 cycles, {} B after {} cycles: ratio {}",
                num(r.med("mem", s, |x| x.extra_f64("live_bytes_after_10k"))),
                num(r.med("mem", s, |x| x.extra_f64("live_bytes_after_all"))),
                num(r.med("mem", s, |x| x.extra_f64("cycles"))),
                num(r.med("mem", s, |x| x.extra_f64("ratio")))
            ),
            "election_crash_failover" => format!(
                "TTL {} s; worst {} ms after the last renewal",
                num(r.med("mem", s, |x| x.extra_f64("ttl_s"))),
                num(r.med("mem", s, |x| x.extra_f64("from_last_renewal_max_ms")))
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "| `{s}` | {} | {} | {} | {note} |",
            num(r.med("mem", s, ops)),
            num(r.med("mem", s, p50)),
            num(r.med("mem", s, p99))
        );
    }
    let _ = writeln!(md);

    if let Some(section) = crate::report_postgres::render(r) {
        md.push_str(&section);
    }
    if let Some(section) = crate::report_scale::render(r) {
        md.push_str(&section);
    }
    if let Some(section) = crate::report_semaphore::render(r) {
        md.push_str(&section);
    }
    if let Some(section) = crate::report_metrics::render(r) {
        md.push_str(&section);
    }

    if let Some(section) = crate::report_stm::render(r) {
        md.push_str(&section);
    }

    if let Some(section) = crate::report_recipes::render(r) {
        md.push_str(&section);
    }

    if !notes.trim().is_empty() {
        let _ = writeln!(md, "{}\n", notes.trim());
    }

    let _ = writeln!(md, "## How this was run\n");
    let _ = writeln!(
        md,
        "`scripts/bench.sh` (see its header); the commands of this run:\n"
    );
    let _ = writeln!(md, "```text\n{}\n```", r.commands.trim());
    md
}

/// Draws the CDFs of the acquire-wait latencies, ours vs Go, for `mutex_contended_w8` and
/// `mutex_handoff`, as an SVG file. Returns whether there was anything to draw.
pub fn plot(r: &Results, path: &Path) -> Result<bool, ReportError> {
    let contended = format!("mutex_contended_w{W}");
    let panels = [
        (contended.as_str(), "mutex_contended_w8: acquire wait"),
        ("mutex_handoff", "mutex_handoff: unlock -> next holder"),
    ];
    let data: Vec<(Vec<f64>, Vec<f64>)> = panels
        .iter()
        .map(|(s, _)| (r.latencies("ours", s), r.latencies("go", s)))
        .collect();
    if data.iter().all(|(o, g)| o.is_empty() && g.is_empty()) {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, 2));
    for ((area, (_, title)), (ours, go)) in areas.iter().zip(panels.iter()).zip(data.iter()) {
        let all = ours.iter().chain(go.iter()).copied();
        let lo = all.clone().fold(f64::INFINITY, f64::min).max(0.01);
        let hi = all.fold(0.0f64, f64::max).max(lo * 10.0);
        let x_lo = 10f64.powf(lo.log10().floor());
        let x_hi = 10f64.powf(hi.log10().ceil());
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 18))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("latency, ms (log scale)")
            .y_desc("fraction of samples")
            .draw()?;
        for (samples, color, label) in [(ours, BLUE, "coord (ours)"), (go, RED, "Go concurrency")] {
            if samples.is_empty() {
                continue;
            }
            let mut v = samples.clone();
            v.sort_by(f64::total_cmp);
            let n = v.len() as f64;
            let points: Vec<(f64, f64)> = v
                .iter()
                .enumerate()
                .map(|(i, x)| (x.max(x_lo), (i + 1) as f64 / n))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(format!("{label} (n={})", v.len()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(true)
}

/// Draws throughput against contending sessions (`mutex_contended_wN`, medians over rounds),
/// ours vs Go, log-log, as an SVG file. Returns whether there was anything to draw.
pub fn plot_scaling(r: &Results, path: &Path) -> Result<bool, ReportError> {
    let series = |imp: &str| -> Vec<(f64, f64)> {
        SWEEP
            .iter()
            .filter_map(|&w| {
                let s = format!("mutex_contended_w{w}");
                r.med(imp, &s, ops).map(|v| (w as f64, v))
            })
            .collect()
    };
    let (ours, go) = (series("ours"), series("go"));
    if ours.len() + go.len() < 2 {
        return Ok(false);
    }
    let floor: Vec<(f64, f64)> = SWEEP
        .iter()
        .filter_map(|&w| {
            let s = format!("mutex_write_floor_w{w}");
            r.med("floor", &s, ops).map(|v| (w as f64, v))
        })
        .collect();
    let all = ours.iter().chain(go.iter()).chain(floor.iter());
    let lo = all
        .clone()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let hi = all.map(|p| p.1).fold(0.0f64, f64::max).max(lo * 10.0);
    let y_lo = 10f64.powf(lo.log10().floor());
    let y_hi = 10f64.powf(hi.log10().ceil());
    let root = SVGBackend::new(path, (640, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "mutex_contended_wN: throughput vs sessions",
            ("sans-serif", 18),
        )
        .margin(12)
        .margin_right(28)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1.5f64..350f64).log_scale(), (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("contending sessions (log scale)")
        .y_desc("acquisitions / s (log scale)")
        .draw()?;
    let floor_color = RGBColor(120, 120, 120);
    for (points, color, label) in [
        (ours, BLUE, "coord (ours)"),
        (go, RED, "Go concurrency"),
        (
            floor,
            floor_color,
            "floor: two writes per acquisition, nothing else",
        ),
    ] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(true)
}
