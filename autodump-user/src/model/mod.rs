//! What a bundle says: its facts, reasons and reports, and the summary built from them. It lives
//! below every stage that fills it (session, host, watcher) and every stage that reads it
//! (writers, upload, alerts), so that neither imports the other.

pub mod frames;
pub mod hangs;
pub mod listing;
pub mod locks;
mod notes;
pub mod regressions;
pub mod reports;
pub mod summary;
pub mod verdict;
