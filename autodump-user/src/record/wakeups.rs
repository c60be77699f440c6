//! Wake-ups as a profile: each blocked stack, the futex it waited on, a `--` frame, then the
//! stack that woke it, leaf first, as bcc's `offwaketime` lays them out, so that a flamegraph
//! shows what each wait was released by above where it waited.

use std::sync::Arc;

use super::{
    profile::{pseudo, Profile, SampleValue, StackPart},
    Recorder,
};
use crate::{collect::drain::RawWakeup, symbolize::Location};

/// Kernel functions that say a timer's expiry woke the thread (in an interrupt, or in a
/// softirq thread): not the thread that ran the expiry.
const TIMER_FRAMES: [&str; 3] = ["hrtimer_wakeup", "call_timer_fn", "process_timeout"];

impl Recorder {
    /// Adds `wakeups` to `profile`: each under the blocked thread's name.
    pub fn add_wakeups(&mut self, profile: &mut Profile, wakeups: &[RawWakeup]) {
        for wakeup in wakeups {
            let blocked = &wakeup.blocked;
            let blocked_user = self.user_stack(&blocked.user);
            // A thread its runtime parked with nothing to run waits for no one: who woke it is the
            // runtime's scheduling (Go's Ms), not a wait of the program's.
            if blocked_user.as_deref().and_then(|u| self.symbolizer.idle_root(u)).is_some() {
                continue;
            }
            let mut waker_kernel = self.kernel_stack(&wakeup.waker_kernel);
            let timer = waker_kernel.as_deref().is_some_and(timer_expiry);
            let context = match (timer, wakeup.interrupt) {
                (true, _) => Some(pseudo::TIMER),
                (false, true) => Some(pseudo::INTERRUPT),
                (false, false) => None,
            };
            if let (Some(_), Some(stack)) = (context, waker_kernel.as_mut()) {
                // What the interrupt interrupted did not wake anyone: its frames would split one
                // timer into as many stacks as there were places it landed.
                if let Some(entry) = stack.iter().position(|l| l.frames.iter().any(|f| f.function.starts_with("asm_")))
                {
                    stack.truncate(entry + 1);
                }
            }
            let name = match context {
                Some(context) => context.to_string(),
                None if wakeup.waker_tgid == self.target.pid => format!("[waker {}]", wakeup.waker_comm),
                None => format!("[waker {} (pid {})]", wakeup.waker_comm, wakeup.waker_tgid),
            };
            let wake = Wake {
                blocked_user,
                blocked_kernel: self.kernel_stack(&blocked.kernel),
                futex: wakeup.futex,
                waker: name,
                waker_user: match context {
                    Some(_) => Some(Vec::new()),
                    None => self.user_stack(&wakeup.waker_user),
                },
                waker_kernel,
            };
            let value = SampleValue { count: blocked.count, nanos: blocked.off_cpu_ns, ..Default::default() };
            add(profile, self.thread_name(blocked.tid), wake, value);
        }
    }
}

/// One wake-up, symbolized: each stack innermost first, None where the kernel lost it.
pub struct Wake {
    pub blocked_user: Option<Vec<Arc<Location>>>,
    pub blocked_kernel: Option<Vec<Arc<Location>>>,
    /// The futex word waited on; 0: none.
    pub futex: u64,
    /// The waker's name: `[waker comm]`, `[waker comm (pid N)]`, `[timer]`, `[interrupt]`.
    pub waker: String,
    pub waker_user: Option<Vec<Arc<Location>>>,
    pub waker_kernel: Option<Vec<Arc<Location>>>,
}

fn user(stack: &Option<Vec<Arc<Location>>>) -> StackPart<'_> {
    stack.as_deref().map_or(StackPart::Pseudo(pseudo::USER_STACK_LOST), StackPart::User)
}

fn kernel(stack: &Option<Vec<Arc<Location>>>) -> StackPart<'_> {
    stack.as_deref().map_or(StackPart::Pseudo(pseudo::KERNEL_STACK_LOST), StackPart::Kernel)
}

/// Adds `wake` to `profile` under `thread`, laid out innermost first as: the waker's name, its
/// user then kernel stack (each root first), `--`, the futex, the blocked kernel then user
/// stack (each leaf first). Folded root first, that reads as offwaketime writes it.
pub fn add(profile: &mut Profile, thread: Arc<str>, wake: Wake, value: SampleValue) {
    let root_first = |stack: Option<Vec<Arc<Location>>>| {
        stack.map(|mut s| {
            s.reverse();
            s
        })
    };
    let (waker_user, waker_kernel) = (root_first(wake.waker_user), root_first(wake.waker_kernel));
    let futex = format!("{}{:x}]", pseudo::FUTEX_PREFIX, wake.futex);
    let mut parts = vec![StackPart::Label(&wake.waker), user(&waker_user), kernel(&waker_kernel)];
    parts.push(StackPart::Pseudo(pseudo::WOKEN_BY));
    if wake.futex != 0 {
        parts.push(StackPart::Label(&futex));
    }
    parts.extend([kernel(&wake.blocked_kernel), user(&wake.blocked_user)]);
    profile.add(thread, &parts, value);
}

/// True when a waker's kernel stack shows a timer's expiry.
fn timer_expiry(kernel: &[Arc<Location>]) -> bool {
    kernel.iter().flat_map(|l| l.frames.iter()).any(|f| TIMER_FRAMES.iter().any(|p| f.function.starts_with(p)))
}
