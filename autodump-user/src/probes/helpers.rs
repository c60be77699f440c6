//! Small steps of loading: the fault period, the verifier's count, programs and maps by name,
//! the memlock limit.

use autodump_common::maps;
use aya::Ebpf;

use super::ProbeMaps;
use crate::error::{AgentError, ExitCode};

/// The smallest prime at or above `n`. A sampling period must not divide the number of pages a
/// loop touches per iteration, or the sample lands on the same fault of it every time: python
/// keeping 64 KiB bytearrays faults 35 times per two iterations, and a period of 16 put malloc's
/// share at 0%, 7% or 13% from run to run against 6.2%. Loops touch powers of two of pages far
/// more often than multiples of a prime.
pub fn prime_period(n: u64) -> u64 {
    let is_prime = |k: u64| k >= 2 && (2..).take_while(|d| d * d <= k).all(|d| !k.is_multiple_of(d));
    (n.max(1)..).find(|&k| k == 1 || is_prime(k)).unwrap_or(n)
}

/// How much work the verifier did on a program (5.16+): what grows when a probe gets complex.
pub(super) fn log_verified(name: &str, info: Result<aya::programs::ProgramInfo, aya::programs::ProgramError>) {
    let count = info.ok().and_then(|i| i.verified_instruction_count());
    let count = count.map_or("not reported (before 5.16)".to_string(), |c| c.to_string());
    tracing::debug!(program = name, verified_instructions = %count, "probe loaded");
}

pub(super) fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, AgentError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| AgentError::new(ExitCode::Internal, format!("program {name} missing from the eBPF object")))
}

pub(super) fn take_maps(ebpf: &mut Ebpf) -> Result<ProbeMaps, String> {
    fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Result<T, String> {
        let map = ebpf.take_map(name).ok_or_else(|| format!("map {name} missing from the eBPF object"))?;
        T::try_from(map).map_err(|_| format!("map {name} has an unexpected type"))
    }
    Ok(ProbeMaps {
        stacks: [take(ebpf, maps::STACKS[0])?, take(ebpf, maps::STACKS[1])?],
        overflow_stacks: [take(ebpf, maps::OVERFLOW_STACKS[0])?, take(ebpf, maps::OVERFLOW_STACKS[1])?],
        cpu_counts: [take(ebpf, maps::CPU_COUNTS[0])?, take(ebpf, maps::CPU_COUNTS[1])?],
        fault_counts: [take(ebpf, maps::FAULT_COUNTS[0])?, take(ebpf, maps::FAULT_COUNTS[1])?],
        offcpu_totals: [take(ebpf, maps::OFFCPU_TOTALS[0])?, take(ebpf, maps::OFFCPU_TOTALS[1])?],
        wakeup_totals: [take(ebpf, maps::WAKEUP_TOTALS[0])?, take(ebpf, maps::WAKEUP_TOTALS[1])?],
        kernel_stack_cache: [take(ebpf, maps::KERNEL_STACK_CACHE[0])?, take(ebpf, maps::KERNEL_STACK_CACHE[1])?],
        offcpu_start: take(ebpf, maps::OFFCPU_START)?,
        control: take(ebpf, maps::CONTROL)?,
        targets: super::targets::TargetMaps::new(
            take(ebpf, maps::TARGETS)?,
            take(ebpf, maps::TARGET_BITS)?,
            take(ebpf, maps::EXITS)?,
        ),
        stats: take(ebpf, maps::STATS)?,
        unwound: [take(ebpf, maps::UNWOUND_STACKS[0])?, take(ebpf, maps::UNWOUND_STACKS[1])?],
    })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
pub(super) fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn periods_are_prime() {
        let periods: Vec<u64> = [1, 2, 4, 16, 200, 211, 212].map(super::prime_period).to_vec();
        assert_eq!(periods, [1, 2, 5, 17, 211, 211, 223]);
    }
}
