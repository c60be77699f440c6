//! The GIL from outside: a CPU-bound thread and an I/O thread in Debian's interpreters. The I/O
//! thread's waits for the GIL are found by the futex they block on (inside the interpreter's
//! GIL state), named by its Python function, and released by the CPU thread's; py-spy's `--gil`
//! samples say which thread holds the GIL, over the same seconds.

use autodump_tests::{
    python::{inclusive_shares, record_with_py_spy, start, with_each_python, Python},
    scratch_dir,
};

/// Of the window, the share the I/O thread (the one waiter) must spend waiting for the GIL: it
/// sleeps 2 ms, then waits up to the 5 ms switch interval and the CPU thread's next eval-breaker
/// check.
const MIN_WAITING_SHARE: f64 = 0.3;
/// py-spy's share of GIL-holding samples in cpu_heavy.
const MIN_HOLDER_SHARE: f64 = 0.8;

#[test]
fn gil_waits_are_named_with_the_function_that_released_the_gil() {
    with_each_python("gil_waits_are_named_with_the_function_that_released_the_gil", gil_waits);
}

fn gil_waits(python: &Python) {
    let fixture = start(python, "gil.py", &[]);
    let scratch = scratch_dir("python_gil");
    let (bundle, spy) = record_with_py_spy(fixture.pid, &scratch, &["--gil"]);
    let holder = inclusive_shares(&spy).get("cpu_heavy").copied().unwrap_or(0.0);
    eprintln!("py-spy --gil: {:.0}% of GIL-holding samples in cpu_heavy", holder * 100.0);
    assert!(holder >= MIN_HOLDER_SHARE, "py-spy says cpu_heavy holds the GIL: {holder:.2}");

    let summary = bundle.summary();
    let locks = summary["locks"].as_array().expect("a locks section");
    let gil = locks.iter().find(|l| l["name"] == "the GIL").unwrap_or_else(|| panic!("no GIL: {locks:#?}"));
    eprintln!("the GIL: {gil}");
    assert!(gil["taken_in"].as_str().unwrap().starts_with("io_loop (gil.py:"), "{gil}");
    assert!(gil["released_by"][0]["name"].as_str().unwrap().starts_with("cpu_heavy (gil.py:"), "{gil}");
    let share = gil["waiting_share"].as_f64().unwrap();
    assert!(share >= MIN_WAITING_SHARE, "the I/O thread waits for the GIL most of its time: {share:.2}");
    let verdict = summary["verdict"].as_str().unwrap();
    assert!(verdict.contains("waiting on the GIL taken in io_loop (gil.py:"), "{verdict}");
    assert!(bundle.read("locks.txt").contains("the GIL"));
}
