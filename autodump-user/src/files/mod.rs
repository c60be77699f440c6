//! Readers of the files a process maps, each parsed once per file and shared by every process
//! that maps it: where functions start (from `.eh_frame`), separate debug files by build-id,
//! segments, the vDSO's symbols, and the cache runtimes keep what they read of files in.

pub mod debug_info;
pub mod fde;
pub mod identity;
pub mod segments;
pub mod shared;
pub mod vdso;

/// A section's bytes, decompressed, unless it holds (or says it would decompress to) more than
/// `max` bytes: a compressed section's header can claim any size, and the allocation would
/// abort the agent. None when it is too large or its data cannot be read.
pub fn bounded_section_data<'d, 'f, S: object::ObjectSection<'d>>(
    section: &S,
    max: u64,
) -> Option<std::borrow::Cow<'d, [u8]>> {
    let compressed = section.compressed_data().ok()?;
    if section.size() > max || compressed.uncompressed_size > max {
        return None;
    }
    compressed.decompress().ok()
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection};

    /// A file the fuzzer made: a compressed section whose header claims an enormous size.
    const CLAIMS_TOO_MUCH: &[u8] = include_bytes!("../../../fuzz/seeds/unwind_rows/compressed_size_overflow");

    #[test]
    fn sections_claiming_too_much_are_not_decompressed() {
        // Copied: the ELF reader needs its header aligned, as a heap buffer is.
        let data = CLAIMS_TOO_MUCH.to_vec();
        let elf = object::File::parse(&*data).unwrap();
        let claims = elf.sections().filter_map(|s| s.compressed_data().ok()).map(|c| c.uncompressed_size).max();
        assert!(claims > Some(1 << 40), "{claims:?}");
        for section in elf.sections() {
            if let Some(bytes) = super::bounded_section_data(&section, 1 << 20) {
                assert!(bytes.len() <= 1 << 20);
            }
        }
    }
}
