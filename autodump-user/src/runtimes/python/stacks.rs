//! Python stacks as a reader wants them: the interpreter's eval-loop frames, which the Python
//! frames they run stand in for, are left out (unless asked for).

use std::sync::Arc;

use autodump_common::runtimes::{frame_kind, kind};

use crate::{record::profile::Profile, symbolize::Location};

/// The C function of CPython's eval loop.
pub const EVAL_FUNCTION: &str = "_PyEval_EvalFrameDefault";

/// `stack` without the eval loop's C frames (with what the compiler inlined into them: a
/// location's last frame is the function that holds it), when it has Python frames. `eval` is
/// where the loop's code is, its cold part too (which a stripped file leaves unnamed).
pub fn without_eval_frames(stack: Vec<Arc<Location>>, eval: &[(u64, u64)]) -> Vec<Arc<Location>> {
    if !stack.iter().any(|l| is_python(l)) {
        return stack;
    }
    let in_eval = |l: &Location| {
        !l.kernel
            && (eval.iter().any(|r| (r.0..r.1).contains(&l.address))
                || l.frames.last().is_some_and(|f| &*f.function == EVAL_FUNCTION))
    };
    stack.into_iter().filter(|l| !in_eval(l)).collect()
}

/// The share of `profile`'s weight (samples, or time off-CPU) whose stacks have Python frames;
/// None for an empty profile.
pub fn python_share(profile: &Profile) -> Option<f64> {
    profile.share_with(is_python)
}

pub fn is_python(location: &Location) -> bool {
    !location.kernel && frame_kind(location.address) == kind::PYTHON
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::Frame;
    use autodump_common::runtimes::python::py_frame;

    fn loc(address: u64, function: &str, file: Option<&str>, line: Option<u32>) -> Arc<Location> {
        let frames = [Frame { function: function.into(), file: file.map(Into::into), line }].into();
        Arc::new(Location { address, kernel: false, mapping: None, frames, unnamed: None })
    }

    #[test]
    fn eval_frames_go_only_where_python_frames_stand_in() {
        let python = loc(py_frame(0x7000, 4), "handler", Some("/srv/app.py"), Some(12));
        let eval = loc(0x1000, EVAL_FUNCTION, None, None);
        let native = loc(0x2000, "main", None, None);
        let inlined: Arc<[Frame]> = [
            Frame { function: "_PyObject_VectorcallTstate".into(), file: None, line: None },
            Frame { function: EVAL_FUNCTION.into(), file: None, line: None },
        ]
        .into();
        let eval_inlined =
            Arc::new(Location { address: 0x1100, kernel: false, mapping: None, frames: inlined, unnamed: None });
        let merged = without_eval_frames(vec![python.clone(), eval.clone(), eval_inlined, native.clone()], &[]);
        assert_eq!(merged, vec![python.clone(), native.clone()], "with the functions inlined into them");
        let none = without_eval_frames(vec![eval.clone(), native.clone()], &[]);
        assert_eq!(none, vec![eval, native.clone()], "no Python frames");
        let cold = loc(0x3000, "python3.11+0x3000", None, None);
        let merged = without_eval_frames(vec![python.clone(), cold, native.clone()], &[(0x3000, 0x3100)]);
        assert_eq!(merged, vec![python.clone(), native.clone()], "the unnamed cold part, by address");
        let mut buf = String::new();
        let shown = crate::record::profile::display_name(&python, &python.frames[0], &mut buf);
        assert_eq!(shown, "handler (/srv/app.py:12)", "a runtime's frame shows its place");
        let other = loc(0x2000, "main", Some("main.c"), Some(3));
        assert_eq!(crate::record::profile::display_name(&other, &other.frames[0], &mut buf), "main");
    }
}
