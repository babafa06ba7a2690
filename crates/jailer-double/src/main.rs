//! `jailer-double`: the Firecracker jailer double as a process with the
//! jailer's argv. Every error prints, as the real v1.16.1 jailer does, its
//! message and then `Error: <its Debug form>` on stderr, and exits 1.

use banger_jailer_double::{parse, run, ArgsError};
use std::time::{SystemTime, UNIX_EPOCH};

fn close_inherited_fds() {
    // The real jailer closes every fd above 2 first.
    // SAFETY: close_range takes plain integers; closing fds this process
    // owns and does not use (nothing is open yet beyond stdio).
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
}

/// CPU time this process used so far, in microseconds.
fn process_cpu_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Print the error as the real jailer's `main` returning `Err` does, and
/// exit 1.
fn fail(msg: impl std::fmt::Display, debug: impl std::fmt::Display) -> ! {
    eprintln!("{msg}");
    eprintln!("Error: {debug}");
    std::process::exit(1)
}

fn main() {
    close_inherited_fds();
    let start_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    let args = match parse(&argv) {
        Ok(a) => a,
        Err(ArgsError::Info(s)) => {
            println!("{s}\n");
            std::process::exit(0);
        }
        Err(e) => fail(&e, e.debug()),
    };
    let cpu_us = process_cpu_us();
    if let Err(e) = run::run(&args, start_us, cpu_us, process_cpu_us) {
        fail(&e, format!("{e:?}"));
    }
}
