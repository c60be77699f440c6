use std::{collections::HashMap, process::Command};

use super::*;

/// The row that covers `pc`.
fn row_at(rows: &[UnwindRow], pc: u64) -> Option<UnwindRow> {
    let i = rows.partition_point(|r| u64::from(r.pc) <= pc);
    i.checked_sub(1).map(|i| rows[i])
}

/// Every row `readelf --debug-dump=frames-interp` prints for `path`, as (pc, CFA, rbp, ra).
fn readelf_rows(path: &str) -> Vec<(u64, String, String, String)> {
    let out = Command::new("readelf").args(["--wide", "--debug-dump=frames-interp", path]).output().expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rows = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    // A CIE's initial rows are printed at address 0: only FDE rows are code addresses.
    let mut in_fde = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"LOC") {
            columns = fields.iter().map(|f| f.to_string()).collect();
        } else if line.contains(" FDE ") || line.contains(" CIE ") {
            in_fde = line.contains(" FDE ");
            columns.clear();
        } else if in_fde && columns.len() == fields.len() && fields.len() >= 2 {
            let Ok(pc) = u64::from_str_radix(fields[0], 16) else { continue };
            let col = |name: &str| {
                columns.iter().position(|c| c == name).map(|i| fields[i].to_string()).unwrap_or_else(|| "u".into())
            };
            rows.push((pc, col("CFA"), col("rbp"), col("ra")));
        }
    }
    rows
}

/// Our row against readelf's at every one of its rows: the CFA rule, where RBP is saved, and
/// an undefined return address.
fn agrees_with_readelf(path: &str, min_rows: usize) {
    let compiled = compile(&*std::fs::read(path).unwrap()).unwrap();
    let reference = readelf_rows(path);
    assert!(reference.len() >= min_rows, "{path}: readelf printed {} rows", reference.len());
    let mut checked = HashMap::<&str, usize>::new();
    for (pc, cfa_text, rbp, ra) in &reference {
        let ours = row_at(&compiled.rows, *pc).unwrap_or_else(|| panic!("{path}: no row at {pc:#x}"));
        let expected = if ra == "u" {
            (cfa::END, None)
        } else if let Some(off) = cfa_text.strip_prefix("rsp+") {
            (cfa::RSP, Some(off.parse::<i32>().unwrap()))
        } else if let Some(off) = cfa_text.strip_prefix("rbp+") {
            (cfa::RBP, Some(off.parse::<i32>().unwrap()))
        } else {
            // Expressions: checked by kind below.
            *checked.entry("expression").or_default() += 1;
            assert!(
                matches!(ours.cfa_kind, cfa::PLT | cfa::DEREF_RBP | cfa::SIGNAL | cfa::UNSUPPORTED),
                "{path}: {pc:#x} {cfa_text}: {ours:?}"
            );
            continue;
        };
        if ours.cfa_kind == cfa::UNSUPPORTED {
            *checked.entry("unsupported").or_default() += 1;
            continue;
        }
        assert_eq!(ours.cfa_kind, expected.0, "{path}: CFA kind at {pc:#x} ({cfa_text}, ra {ra}): {ours:?}");
        if let Some(off) = expected.1 {
            assert_eq!(ours.cfa_offset, off, "{path}: CFA offset at {pc:#x}: {ours:?}");
            let rbp_expected = rbp.strip_prefix("c").and_then(|o| o.parse::<i16>().ok()).unwrap_or(RBP_UNCHANGED);
            assert_eq!(ours.rbp_offset, rbp_expected, "{path}: rbp at {pc:#x} ({rbp}): {ours:?}");
        }
        *checked.entry("plain").or_default() += 1;
    }
    assert!(
        checked.get("plain").copied().unwrap_or(0) * 100 >= reference.len() * 99,
        "{path}: {checked:?} of {}",
        reference.len()
    );
}

#[test]
fn gzip_rows_match_readelf() {
    agrees_with_readelf("/usr/bin/gzip", 100);
}

#[test]
fn glibc_rows_match_readelf_and_cover_its_special_frames() {
    let libc = "/lib/x86_64-linux-gnu/libc.so.6";
    agrees_with_readelf(libc, 100);
    let compiled = compile(&*std::fs::read(libc).unwrap()).unwrap();
    let kinds = |kind| compiled.rows.iter().filter(|r| r.cfa_kind == kind).count();
    assert!(compiled.fdes > 3000, "{} FDEs", compiled.fdes);
    assert_eq!(compiled.bad_entries, 0);
    assert!(kinds(cfa::END) >= 2, "_start-like ends (clone, clone3)");
    assert!(kinds(cfa::SIGNAL) >= 1, "__restore_rt");
    assert!(kinds(cfa::PLT) >= 1, "the PLT");
    assert!(compiled.rows.windows(2).all(|w| w[0].pc < w[1].pc), "sorted, one row per address");
}

/// Code built without `.eh_frame` (`-fno-asynchronous-unwind-tables`) but with `-g`: its CFI
/// is in `.debug_frame`.
#[test]
fn debug_frame_only_binaries() {
    let dir = std::env::temp_dir().join(format!("autodump-debug-frame-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (source, binary) = (dir.join("f.c"), dir.join("f"));
    std::fs::write(&source, "__attribute__((noinline)) int deep(int x) { return x < 2 ? x : deep(x - 1) * 3 + deep(x - 2); }\nint main(int c, char **v) { return deep(c) + (v != 0); }\n")
        .unwrap();
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("gcc");
    assert!(status.success());
    // Only the C runtime's own objects bring .eh_frame; drop it to leave .debug_frame alone.
    let status = Command::new("objcopy")
        .args(["--remove-section", ".eh_frame", "--remove-section", ".eh_frame_hdr"])
        .arg(&binary)
        .status()
        .unwrap();
    assert!(status.success());
    let compiled = compile(&*std::fs::read(&binary).unwrap()).unwrap();
    assert!(compiled.from_debug_frame && compiled.fdes >= 2, "{compiled:?}");
    agrees_with_readelf(binary.to_str().unwrap(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn garbage_is_an_error_or_fewer_rows_never_a_panic() {
    assert_eq!(compile(&b"not an elf"[..]).unwrap_err(), RowsError::NotElf);
    let mut libc = std::fs::read("/usr/bin/gzip").unwrap();
    let elf = object::File::parse(&*libc).unwrap();
    let (offset, size) = elf.section_by_name(".eh_frame").unwrap().file_range().unwrap();
    let whole = compile(&*libc).unwrap().rows.len();
    // Overwrite the second half of .eh_frame with a pattern: lengths and pointers turn to junk.
    for (i, byte) in libc[(offset + size / 2) as usize..(offset + size) as usize].iter_mut().enumerate() {
        *byte = (i * 37 % 251) as u8;
    }
    let broken = compile(&*libc).unwrap();
    assert!(broken.bad_entries >= 1);
    assert!(broken.rows.len() < whole && !broken.rows.is_empty(), "{} of {whole}", broken.rows.len());
}

#[test]
fn plt_and_realignment_expressions() {
    let mut plt = PLT_EXPRESSION;
    assert_eq!(classify_expression(&plt), Some((cfa::PLT, 11)));
    plt[PLT_LIT_AT] = DW_OP_LIT0 + 10;
    assert_eq!(classify_expression(&plt), Some((cfa::PLT, 10)));
    // DW_OP_breg6 -8; DW_OP_deref
    assert_eq!(classify_expression(&[DW_OP_BREG6, 0x78, DW_OP_DEREF]), Some((cfa::DEREF_RBP, -8)));
    assert_eq!(classify_expression(&[0x77, 0xa0, 0x01, DW_OP_DEREF]), None, "rsp-based deref: signal frames only");
}

#[test]
fn a_compressed_section_claiming_too_much_is_refused() {
    // The fuzzer's file: a compressed section whose header claims an enormous size (the
    // allocation aborted the agent). Copied: the ELF reader needs its header aligned.
    let data = include_bytes!("../../../fuzz/seeds/unwind_rows/compressed_size_overflow").to_vec();
    assert!(compile(&*data).is_err());
}
