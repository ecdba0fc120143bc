//! Running the external clients that `tests/run.sh` prepares (Node scripts driving Chromium):
//! their paths from the environment, a bounded wait, and where artifacts go.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// An environment variable that `tests/run.sh` sets; a missing one fails the test.
pub fn env_path(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with tests/run.sh (it installs Chromium too)")
    })
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
