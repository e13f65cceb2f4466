//! The benchmark tool's own smoke test: short runs against the real skiff
//! binary and Debian's CNCF distribution. It checks that every workload
//! ran against both without an error and that every figure is printed;
//! it asserts no timing (those live in BENCHMARKS.md).

use std::path::PathBuf;
use std::process::Command;

/// The skiff binary: `$SKIFF_BIN`, or the one scripts/test.sh built next to
/// this test's own directory (`…/release/deps/smoke-…` → `…/release/skiff`).
fn skiff() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("skiff");
    assert!(
        bin.exists(),
        "{} is missing: build it first (scripts/test.sh does) or set SKIFF_BIN",
        bin.display()
    );
    bin
}

fn bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff-bench"))
        .args(args)
        .arg("--skiff")
        .arg(skiff())
        .output()
        .expect("running skiff-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "skiff-bench {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn compare_prints_every_figure_of_every_workload_for_both_registries() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("report.md");
    // 11 MiB: one size above the 10 MiB chunk, so the chunked push runs.
    let out = bench(&[
        "compare",
        "--duration",
        "0.3",
        "--sizes",
        "1MiB,11MiB",
        "--pull-many-size",
        "256KiB",
        "--markdown",
        md.to_str().unwrap(),
    ]);
    let workloads = [
        "manifest-get-tag",
        "manifest-get-digest",
        "manifest-head-tag",
        "manifest-head-digest",
        "tags-list",
        "catalog",
        "push-monolithic-1MiB",
        "push-streamed-1MiB",
        "pull-1MiB",
        "mixed-1MiB",
        "push-monolithic-11MiB",
        "push-streamed-11MiB",
        "push-chunked-11MiB",
        "pull-11MiB",
        "mixed-11MiB",
        "pull-many-256KiB",
    ];
    for w in workloads {
        // Where nginx is installed, a second table compares pull-many with it.
        let versus_distribution = out.split("\nThe same blob files").next().unwrap();
        let rows: Vec<&str> = versus_distribution
            .lines()
            .filter(|l| l.starts_with(&format!("| {w} |")))
            .collect();
        let figures: &[&str] = if w.contains("iB") {
            &["ops/s", "MB/s", "p50 ms", "p90 ms", "p99 ms", "max ms"]
        } else {
            &["ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms"]
        };
        assert_eq!(rows.len(), figures.len(), "{w}:\n{out}");
        for (row, figure) in rows.iter().zip(figures) {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            // workload | c | figure | skiff | distribution | ratio | errors
            assert_eq!(cells.len(), 7, "{row}");
            assert_eq!(cells[2], *figure, "{row}");
            for v in &cells[3..5] {
                let x: f64 = v.parse().unwrap_or_else(|_| panic!("{row}: {v}"));
                assert!(x > 0.0, "{row}");
            }
            assert!(cells[5].ends_with('×'), "{row}");
            assert_eq!(cells[6], "0 / 0", "errors in {row}");
        }
    }
    assert!(
        out.contains("Resident memory after the run: skiff "),
        "{out}"
    );
    let report = std::fs::read_to_string(&md).unwrap();
    assert!(report.starts_with("Machine: "), "{report}");
    assert!(report.contains("Command: `"), "{report}");
    assert!(report.contains("| push-chunked-11MiB |"), "{report}");
}

#[test]
fn scale_reports_latency_against_n_and_draws_it() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("scale.svg");
    let out = bench(&["scale", "--sizes", "10,30", "--plot", svg.to_str().unwrap()]);
    for registry in ["skiff", "distribution"] {
        for n in [10, 30] {
            let row = out
                .lines()
                .find(|l| l.starts_with(&format!("| {registry} | {n} |")))
                .unwrap_or_else(|| panic!("no row for {registry} at {n}:\n{out}"));
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 7, "{row}");
            for v in &cells[2..] {
                assert!(v.parse::<f64>().unwrap_or(0.0) > 0.0, "{row}");
            }
        }
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.contains("<svg"), "not an SVG");
    assert!(
        plot.contains("distribution: tag push"),
        "no legend in the plot"
    );
}
