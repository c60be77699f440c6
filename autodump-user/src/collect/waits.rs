//! What a thread blocked on a mutex waits for: the thread that holds it, read from the mutex
//! itself. glibc's `pthread_mutex_t` keeps the lock word (the futex) first and its owner's tid
//! 8 bytes in (`__data.__owner`, on x86_64 and arm64 alike). Read only for a wait whose stack
//! is glibc's mutex lock, and believed only if the word says locked and the owner is another
//! live thread of the process.

use super::remote::RemoteMemory;

/// Bytes from the lock word to the owner's tid.
const OWNER_OFFSET: u64 = 8;

/// The thread of `pid` that holds the mutex whose lock word is at `futex`, if it can be told.
pub fn mutex_owner(pid: u32, waiter: u32, futex: u64, memory: &dyn RemoteMemory) -> Option<u32> {
    let word = memory.i32(futex).ok()?;
    let owner = u32::try_from(memory.i32(futex.checked_add(OWNER_OFFSET)?).ok()?).ok()?;
    // 1: locked, 2: locked with waiters.
    let live = || std::path::Path::new(&format!("/proc/{pid}/task/{owner}")).exists();
    (matches!(word, 1 | 2) && owner != 0 && owner != waiter && live()).then_some(owner)
}

/// True for a blocked stack (innermost first, function names) in glibc's mutex lock.
pub fn in_mutex_lock<'a>(mut functions: impl Iterator<Item = &'a str>) -> bool {
    functions.any(|f| f.contains("pthread_mutex_lock") || f.contains("lll_lock_wait"))
}
