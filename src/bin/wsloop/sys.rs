//! What the command asks of the operating system: the open-file limit and CPU times.

use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use nix::unistd::{sysconf, SysconfVar};

/// Raises the soft limit on open files to the hard limit and warns on stderr if it is still
/// below `needed`.
pub fn raise_fd_limit(needed: u64, who: &str) {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let now = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    if now < needed {
        eprintln!(
            "{who}: warning: {needed} file descriptors are needed, but the limit is {now}; \
             raise it with `ulimit -n` (as root)"
        );
    }
}

/// Clock ticks per second, the unit of `/proc/*/stat` times.
fn ticks_per_second() -> Option<f64> {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => Some(hz as f64),
        _ => None,
    }
}

/// CPU time (user + system, seconds) of this process, all threads.
pub fn own_cpu() -> f64 {
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |ru| {
        let (u, s) = (ru.user_time(), ru.system_time());
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(u) + secs(s)
    })
}

/// CPU time (utime + stime, seconds) of process `pid`, from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces): the state is field 3, utime and stime
    // are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / ticks_per_second()?)
}

/// Busy CPU seconds of the whole machine (all cores, from `/proc/stat`): user, nice, system
/// and steal. Interrupt time is left out: without IRQ time accounting the kernel charges the
/// ticks that land in softirq (loopback TCP delivery, much of it ours) to no process.
pub fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(7)?;
    Some(busy / ticks_per_second()?)
}
