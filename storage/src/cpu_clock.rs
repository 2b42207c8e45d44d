//! The calling thread's CPU time, for accounting where work went: the writer's encoding
//! tasks ([`crate::writer::WriteTimings::encoding_cpu_s`]) and the ingest job's stages.
//! Unlike a wall clock it does not count time a thread waits or is preempted.

/// This thread's CPU time in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`; 0 where the clock is
/// unavailable).
pub fn thread_cpu_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call, and
    // CLOCK_THREAD_CPUTIME_ID is a clock every Linux and macOS kernel provides.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return 0;
    }
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_work_and_not_sleep() {
        let start = thread_cpu_nanos();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let slept = thread_cpu_nanos() - start;
        let start = thread_cpu_nanos();
        let mut x = 0u64;
        while thread_cpu_nanos() - start < 20_000_000 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(slept < 10_000_000, "{slept} ns while sleeping");
    }
}
