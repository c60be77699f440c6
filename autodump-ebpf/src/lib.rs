//! Empty library target: it lets autodump-user name this crate as a build-dependency, so cargo
//! rebuilds the agent when the probes change. The probes themselves are the `autodump` binary.
#![no_std]
