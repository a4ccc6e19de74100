//! The scale section of `BENCHMARKS.md` (issue 11): N idle sessions in one process, ours
//! (`scale-ours`) against Go's `concurrency.Session` (`scale-go`, bench/go-scale), and one
//! election with many candidates and observers whose leader crashes (`scale-ours`), run by
//! scripts/bench-scale.sh.

use std::fmt::Write as _;

use crate::report::{num, ratio, Results};
use crate::stats::BenchResult;

const OURS: &str = "scale-ours";
const GO: &str = "scale-go";

/// The first scenario of `imp` whose name starts with `prefix` (e.g. `idle_sessions_1000`).
fn scenario_named(r: &Results, imp: &str, prefix: &str) -> Option<String> {
    r.rounds
        .values()
        .filter_map(|imps| imps.get(imp))
        .flatten()
        .find(|x| x.scenario.starts_with(prefix))
        .map(|x| x.scenario.clone())
}

/// The section, or `None` when the results hold no scale run.
pub fn render(r: &Results) -> Option<String> {
    let idle = scenario_named(r, OURS, "idle_sessions_");
    let election = scenario_named(r, OURS, "election_candidates_");
    if idle.is_none() && election.is_none() {
        return None;
    }
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(
        w,
        "## Scale: idle sessions, and an election with many candidates\n"
    );
    if let Some(s) = &idle {
        let n = s.trim_start_matches("idle_sessions_");
        let f = |key: &'static str| move |x: &BenchResult| x.extra_f64(key);
        let ttl = num(r.med(OURS, s, f("ttl_s")));
        let idle_s = num(r.med(OURS, s, f("idle_s")));
        let _ = writeln!(
            w,
            "{n} sessions (TTL {ttl} s) idle in one process on one connection, measured over \
             {idle_s} s after a second of warm-up; ours (`coord-bench --scenario idle_sessions`, \
             release build) and Go's `concurrency.NewSession` on one `clientv3` client \
             (`bench/go-scale`) alternately on the same etcd; medians over rounds, ratios within \
             a round. etcd's figures are its own (`/metrics`: CPU, watchers, open gRPC streams, \
             keep-alive requests received).\n"
        );
        let _ = writeln!(w, "| | ours | Go | ours / Go |\n|---|---:|---:|---:|");
        let rows: [(&str, &'static str); 7] = [
            ("client CPU, s per s", "cpu_s_per_s"),
            ("client heap per session, bytes", "heap_bytes_per_session"),
            ("etcd CPU, s per s", "etcd_cpu_s_per_s"),
            (
                "keep-alive requests etcd received per s",
                "etcd_keep_alives_per_s",
            ),
            ("gRPC streams open on etcd", "etcd_grpc_streams"),
            ("etcd watchers", "etcd_watchers"),
            ("sessions lost", "sessions_lost"),
        ];
        for (label, key) in rows {
            let _ = writeln!(
                w,
                "| {label} | {} | {} | {} |",
                num(r.med(OURS, s, f(key))),
                num(r.med(GO, s, f(key))),
                ratio(&r.ratios((OURS, s), (GO, s), f(key)))
            );
        }
        let _ = writeln!(w);
    }
    if let Some(s) = &election {
        let f = |key: &'static str| move |x: &BenchResult| x.extra_f64(key);
        let candidates = num(r.med(OURS, s, f("candidates")));
        let observers = num(r.med(OURS, s, f("observers")));
        let ttl = num(r.med(OURS, s, f("ttl_s")));
        let worst = r
            .series(OURS, s, f("from_last_renewal_max_ms"))
            .into_iter()
            .fold(f64::NAN, f64::max);
        let limit = r.med(OURS, s, f("limit_ms"));
        let within = limit.is_some_and(|l| worst <= l);
        let _ = writeln!(
            w,
            "One election, {candidates} candidates (one session each, one connection) and \
             {observers} observers (`ElectionObserver::observe`, another connection); the \
             leader stops renewing (a crash) at a random point of its keep-alive cycle, TTL \
             {ttl} s, each round twice (`coord-bench --scenario election_candidates`).\n"
        );
        let _ = writeln!(w, "| | figure |\n|---|---:|");
        let _ = writeln!(
            w,
            "| crash → new leader elected, p50 ms | {} |",
            num(r.med(OURS, s, f("to_leader_p50_ms")))
        );
        let _ = writeln!(
            w,
            "| crash → every observer told, p50 ms | {} |",
            num(r.med(OURS, s, |x| Some(x.p50_ms)))
        );
        let _ = writeln!(
            w,
            "| last renewal → every observer told, worst ms (target: at most TTL + 1 s = {} ms) | {} **{}** |",
            num(limit),
            num(Some(worst)),
            if within { "pass" } else { "FAIL" }
        );
        let _ = writeln!(
            w,
            "| requests to etcd per leader change (all candidates and observers, lease calls aside) | {} |",
            num(r.med(OURS, s, f("kv_calls_per_change")))
        );
        let _ = writeln!(
            w,
            "| watch events delivered per leader change | {} |",
            num(r.med(OURS, s, f("watch_events_per_change")))
        );
        let _ = writeln!(
            w,
            "| etcd CPU per leader change, ms (less its idle rate) | {} |",
            num(r.med(OURS, s, f("etcd_cpu_ms_per_change")))
        );
        let _ = writeln!(
            w,
            "| keys left after every session closed | {} |\n",
            num(r.med(OURS, s, f("keys_left_after_close")))
        );
    }
    Some(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_tables_from_results() {
        let dir = std::env::temp_dir().join(format!("report-scale-{}", std::process::id()));
        let round = dir.join("rounds").join("1");
        std::fs::create_dir_all(&round).unwrap();
        std::fs::write(
            round.join("scale-ours.jsonl"),
            concat!(
                r#"{"scenario":"idle_sessions_1000","ops":1000,"extra":{"cpu_s_per_s":0.02,"etcd_grpc_streams":1,"ttl_s":10,"idle_s":10,"sessions_lost":0}}"#,
                "\n",
                r#"{"scenario":"election_candidates_1000","ops":2,"p50_ms":1500,"extra":{"candidates":1000,"observers":100,"ttl_s":2,"to_leader_p50_ms":1400,"from_last_renewal_max_ms":2500,"limit_ms":3000,"kv_calls_per_change":1,"watch_events_per_change":101,"etcd_cpu_ms_per_change":20,"keys_left_after_close":0}}"#,
                "\n"
            ),
        )
        .unwrap();
        std::fs::write(
            round.join("scale-go.jsonl"),
            r#"{"scenario":"idle_sessions_1000","ops":1000,"extra":{"cpu_s_per_s":0.01,"etcd_grpc_streams":1,"sessions_lost":0}}"#,
        )
        .unwrap();
        let r = Results::load(&dir).unwrap();
        let md = render(&r).expect("a section");
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            md.contains("| client CPU, s per s | 0.020 | 0.010 | 2x |"),
            "{md}"
        );
        assert!(
            md.contains("| gRPC streams open on etcd | 1 | 1 | 1x |"),
            "{md}"
        );
        assert!(md.contains("2,500 **pass**"), "{md}");
    }
}
