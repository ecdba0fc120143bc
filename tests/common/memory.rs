//! Process memory and descriptor helpers for the tests that measure the server in-process
//! (`tests/hostile.rs`, `tests/soak.rs`).

/// This process's resident set in KiB, after handing freed heap memory back to the kernel.
pub fn rss_kib() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_now_kib()
}

/// The resident set without trimming (for peaks, sampled while a test runs).
pub fn rss_now_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Raises the soft limit on open files towards `want` (up to the hard limit): both ends of
/// every test connection live in this process.
pub fn raise_fd_limit(want: u64) {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit on a properly initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
