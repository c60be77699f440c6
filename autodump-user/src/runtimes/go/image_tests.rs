//! The reader over a hand-made memory image (laid out as `GoRuntime::over_image` expects): what
//! it must find in a consistent runtime, and that garbage pointers end walks instead of running
//! away.

use super::{GoRuntime, MAX_FRAMES};

const BASE: u64 = 0x10_0000;

fn put(img: &mut [u8], at: u64, v: u64) {
    img[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

/// Two waiting goroutines of main.main, one with a three-frame stack, one with two; one P.
fn image() -> Vec<u8> {
    let mut img = vec![0u8; 0x700];
    put(&mut img, 0, BASE + 0x200); // allgs.ptr
    put(&mut img, 8, 2); // allgs.len
    put(&mut img, 16, 2); // allglen
    put(&mut img, 24, BASE + 0x300); // allp.ptr
    put(&mut img, 32, 1); // allp.len
    for i in 0..4 {
        put(&mut img, 128 + 16 * i, BASE + 0x180); // waitReasonStrings[i]
        put(&mut img, 128 + 16 * i + 8, 12);
    }
    img[0x180..0x180 + 12].copy_from_slice(b"chan receive");
    put(&mut img, 0x200, BASE + 0x400);
    put(&mut img, 0x208, BASE + 0x500);
    put(&mut img, 0x300, BASE + 0x380);
    for (g, bp) in [(0x400, 0x610), (0x500, 0x650)] {
        put(&mut img, g, BASE + 0x600); // stack.lo
        put(&mut img, g + 8, BASE + 0x700); // stack.hi
        put(&mut img, g + 56, 0x40_1000); // sched.pc
        put(&mut img, g + 64, BASE + 64); // startpc: main.main
        put(&mut img, g + 80, BASE + bp); // sched.bp
        img[g as usize + 88] = 4; // _Gwaiting
    }
    put(&mut img, 0x610, BASE + 0x630);
    put(&mut img, 0x618, 0x40_1234);
    put(&mut img, 0x638, 0x40_1300);
    put(&mut img, 0x658, 0x40_1400);
    img
}

fn runtime(img: Vec<u8>) -> GoRuntime {
    GoRuntime::over_image(BASE, img)
}

#[test]
fn reads_a_consistent_image() {
    let rt = runtime(image());
    assert_eq!(rt.count().unwrap(), 2);
    let gs = rt.goroutines().unwrap();
    assert_eq!(gs.len(), 2);
    assert_eq!(gs[0].state, "chan receive");
    assert_eq!(*gs[0].frames, [0x40_1000, 0x40_1234, 0x40_1300]);
    assert_eq!(*gs[1].frames, [0x40_1000, 0x40_1400]);
}

#[test]
fn a_frame_chain_that_loops_or_leaves_the_stack_ends() {
    let mut img = image();
    put(&mut img, 0x630, BASE + 0x610); // points back down: a loop
    put(&mut img, 0x650, BASE + 0x7000); // beyond stack.hi
    put(&mut img, 0x658, 0x40_1400);
    let gs = runtime(img).goroutines().unwrap();
    assert!(gs.iter().all(|g| g.frames.len() <= 3 && g.frames.len() <= MAX_FRAMES), "{gs:?}");
}

#[test]
fn garbage_counts_are_rejected() {
    let mut img = image();
    put(&mut img, 16, u64::MAX); // allglen
    put(&mut img, 8, u64::MAX); // allgs.len
    let rt = runtime(img);
    assert!(rt.count().is_err());
    assert!(rt.goroutines().is_err());
    assert!(runtime(vec![0u8; 16]).count().is_err(), "globals outside the image cannot be read");
}

#[test]
fn states_of_newer_runtimes_are_named_and_dead_extra_goroutines_left_out() {
    // (status, what the dump says, or None when the goroutine is not in it)
    let cases = [
        (4, Some("chan receive")),
        (0x1004, Some("chan receive")), // _Gscan | _Gwaiting: being scanned by the GC
        (1, Some("runnable")),
        (9, Some("preempted")),
        (10, Some("leaked")), // _Gleaked
        (6, None),            // _Gdead
        (11, None),           // _Gdeadextra: dead, kept for an extra M
        (0, None),            // _Gidle
    ];
    for (status, want) in cases {
        let mut img = image();
        img[0x400 + 88..0x400 + 92].copy_from_slice(&(status as u32).to_le_bytes());
        let gs = runtime(img).goroutines().unwrap();
        let first = (gs.len() == 2).then(|| gs[0].state.as_str());
        assert_eq!(first, want, "status {status:#x}: {gs:?}");
    }
}
