//! `locks.txt`: the summary's locks as a reader scans them, each with who waited, who released
//! it, and the heaviest stacks of both sides.

use std::io::Write;

use crate::model::locks::{LockReport, Share};

pub fn locks_txt(locks: &[LockReport], window_s: f64, w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(w, "Locks: blocked time on each futex until woken, and what woke the waiters ({window_s:.1} s window).")?;
    writeln!(w, "For a mutex, the code that released it is the code that held it.")?;
    for (n, lock) in locks.iter().enumerate() {
        writeln!(w)?;
        let what =
            lock.name.map_or_else(|| format!("futex 0x{}", lock.address), |n| format!("{n} (0x{})", lock.address));
        writeln!(
            w,
            "#{} {what} taken in {}: {:.3} s in {} waits ({:.0}% of the window, summed over threads)",
            n + 1,
            lock.taken_in,
            lock.wait_us as f64 / 1e6,
            lock.waits,
            lock.waiting_share * 100.0,
        )?;
        shares(w, "waiters", &lock.waiters, lock.wait_us)?;
        let released = lock.wait_us - lock.timed_out_us;
        shares(w, "released by", &lock.released_by, released)?;
        if lock.timed_out_us > 0 {
            let share = lock.timed_out_us as f64 * 100.0 / lock.wait_us.max(1) as f64;
            writeln!(w, "  ended by their own timeout, then waited again: {share:.0}% of the wait")?;
        }
        stacks(w, "blocked stacks", &lock.blocked_stacks)?;
        stacks(w, "waker stacks", &lock.waker_stacks)?;
    }
    Ok(())
}

fn shares(w: &mut dyn Write, what: &str, shares: &[Share], total_us: u64) -> std::io::Result<()> {
    let listed: Vec<String> = shares
        .iter()
        .map(|s| format!("{} {:.0}%", s.name, s.wait_us as f64 * 100.0 / total_us.max(1) as f64))
        .collect();
    writeln!(w, "  {what}: {}", listed.join(", "))
}

fn stacks(w: &mut dyn Write, what: &str, stacks: &[Share]) -> std::io::Result<()> {
    writeln!(w, "  {what} (root first):")?;
    for s in stacks {
        writeln!(w, "    {:>10.3} s  {}", s.wait_us as f64 / 1e6, s.name)?;
    }
    Ok(())
}
