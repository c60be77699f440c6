//! Builds the eBPF probes (autodump-ebpf) for the BPF target and hands the object to the agent,
//! which embeds it: `cargo build --release` yields one self-contained binary.
//!
//! The same build as `aya_build::build_ebpf` (nightly, `-Z build-std=core`, BTF), but quiet: that
//! function forwards every line of the inner cargo's progress as a `cargo:warning`, so a clean
//! first build printed about 90 `warning:` lines. Here a successful build prints only the
//! compiler's own diagnostics (real warnings), and a failed one everything, as the build
//! script's error.
use std::{
    env,
    io::{BufReader, Read},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context as _};
use cargo_metadata::{Message, MetadataCommand};

const PROBES: &str = "autodump-ebpf";
const TOOLCHAIN: &str = "nightly";

fn main() {
    // The error alone (no backtrace): it is the inner build's own log.
    if let Err(e) = build() {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
}

fn build() -> anyhow::Result<()> {
    let metadata = MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == PROBES)
        .ok_or_else(|| anyhow!("{PROBES} package not found"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    println!("cargo:rerun-if-changed={root_dir}");
    println!("cargo:rerun-if-changed={}", metadata.workspace_root.join("autodump-common"));

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    // Fuzz targets (cargo-fuzz sets `--cfg fuzzing`) call parsers only: no probes to embed.
    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        return std::fs::write(out_dir.join("autodump"), []).context("cannot write an empty probe object");
    }
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN not set")?;
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    let target = if endian == "big" { "bpfeb-unknown-none" } else { "bpfel-unknown-none" };

    let mut cmd = Command::new("rustup");
    cmd.args(["run", TOOLCHAIN, "cargo", "build", "--package", PROBES, "--bins", "--message-format=json"])
        .args(["--release", "--target", target, "-Z", "build-std=core"])
        // One target directory for every profile of the outer build (check, test, release):
        // the probes are built once, whichever comes first, and found fresh by the rest.
        .arg("--target-dir")
        .arg(metadata.target_directory.join("ebpf").as_std_path())
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        // The outer cargo's compiler settings are for the host, not for this build.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?} (is rustup installed?)"))?;

    // The progress log, kept for a failure; read on its own thread so that neither pipe fills.
    let mut stderr = child.stderr.take().expect("piped");
    let progress = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut executables = Vec::new();
    let mut diagnostics = Vec::new();
    for message in Message::parse_stream(BufReader::new(child.stdout.take().expect("piped"))) {
        match message.context("the eBPF build's output is not cargo's JSON")? {
            Message::CompilerArtifact(artifact) => {
                if let Some(executable) = artifact.executable {
                    executables.push((artifact.target.name, executable.into_std_path_buf()));
                }
            }
            Message::CompilerMessage(m) => diagnostics.extend(m.message.rendered),
            Message::TextLine(line) => diagnostics.push(line),
            _ => {}
        }
    }
    let status = child.wait().context("cannot wait for the eBPF build")?;
    let progress = progress.join().unwrap_or_default();
    if !status.success() {
        bail!("building the probes failed ({status}):\n{progress}\n{}", diagnostics.join("\n"));
    }
    for line in diagnostics.iter().flat_map(|d| d.lines()) {
        println!("cargo:warning={line}");
    }
    for (name, binary) in executables {
        std::fs::copy(&binary, out_dir.join(&name))
            .with_context(|| format!("cannot copy {} into {}", binary.display(), out_dir.display()))?;
    }
    Ok(())
}
