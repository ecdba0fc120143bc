//! Running the external clients that `tests/run.sh` prepares (Node scripts driving Chromium):
//! their paths from the environment, a bounded wait, and where artifacts go.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// An environment variable that `tests/run.sh` sets; a missing one fails the test.
pub fn env_path(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with tests/run.sh (it installs Chromium too)")
    })
}

/// Chromium, as `tests/run.sh` exports it; fails if it is missing.
pub fn chromium() -> String {
    let path = env_path("WSLOOP_CHROMIUM");
    assert!(
        Path::new(&path).is_file(),
        "WSLOOP_CHROMIUM={path} does not exist: install Chromium \
         (Debian: apt-get install chromium), or run tests/run.sh as root to have it installed"
    );
    path
}

/// Starts the Node script `name` of `tests/interop/node/` with `args`, Chromium's path in its
/// environment, and its standard streams piped.
pub fn node_script<S: AsRef<OsStr>>(name: &str, args: &[S]) -> Child {
    let script = Path::new(&env_path("WSLOOP_NODE_CLIENT_DIR")).join(name);
    let node = std::env::var("WSLOOP_NODE").unwrap_or_else(|_| "node".into());
    Command::new(node)
        .arg(&script)
        .args(args)
        .env("WSLOOP_CHROMIUM", chromium())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node {}: {e}", script.display()))
}

/// Where an artifact goes: the cargo target directory (`target/` by default).
pub fn artifact(name: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join(name)
}

/// Waits for `child` until `deadline`; then asks it to stop (playwright-core closes the browser
/// on SIGTERM), and kills it 5 s later.
pub fn wait_or_kill(child: &mut Child, deadline: Instant) -> ExitStatus {
    let mut terminated = None;
    loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            return status;
        }
        let now = Instant::now();
        match terminated {
            None if now >= deadline => {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                terminated = Some(now);
            }
            Some(at) if now >= at + Duration::from_secs(5) => {
                let _ = child.kill();
                return child.wait().expect("wait for node");
            }
            _ => {}
        }
        thread::sleep(Duration::from_millis(50));
    }
}
