//! Running real clients (skopeo, docker, podman, wkg, ...) from tests. A
//! client that is not installed fails the test rather than skipping it:
//! `scripts/test.sh` installs every client the tests use.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Run a client to completion.
pub fn output(cmd: &mut Command) -> Output {
    let program = cmd.get_program().to_string_lossy().to_string();
    match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed (scripts/test.sh installs every client the tests use)"
        ),
        Err(e) => panic!("running {program}: {e}"),
    }
}

/// The command line, for messages, with credentials masked (the run
/// checks that no password appears in its output).
pub fn describe(cmd: &Command) -> String {
    const SECRET_NEXT: &[&str] = &["--creds", "--dest-creds", "--src-creds", "-u", "--password"];
    let mut s = cmd.get_program().to_string_lossy().to_string();
    let mut masked = false;
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        s.push_str(if masked { "***" } else { &a });
        masked = SECRET_NEXT.contains(&a.as_ref());
    }
    s
}

/// Run a client that must succeed; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    run_both(cmd).0
}

/// Run a client that must succeed; returns its stdout and stderr.
pub fn run_both(cmd: &mut Command) -> (String, String) {
    let o = output(cmd);
    assert!(
        o.status.success(),
        "`{}` failed ({}):\nstdout: {}\nstderr: {}",
        describe(cmd),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// Run a client that must fail; returns its stderr.
pub fn run_failing(cmd: &mut Command) -> String {
    let o = output(cmd);
    assert!(
        !o.status.success(),
        "`{}` succeeded but should have failed:\n{}",
        describe(cmd),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A figure measured by a test (a duration, a rate), not asserted: printed,
/// and appended to `$SKIFF_REPORT` when set, which `scripts/test.sh` shows at
/// the end of the run (cargo hides a passing test's output).
pub fn report(line: &str) {
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("SKIFF_REPORT") {
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}
