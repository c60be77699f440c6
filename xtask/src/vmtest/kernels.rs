//! The matrix's kernels: Debian's own `linux-image-amd64` of each release, fetched with apt from
//! the release's own index into `target/vmtest/kernels/<suite>/`, with the kernel's BTF taken
//! out of the image for the agent's unit tests. Cached: a kernel already there is not fetched
//! again (delete its directory to refresh it).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::util::{root, run, step};

/// The releases whose kernels the matrix boots, oldest first: Debian 11, 12, 13 and unstable.
pub const SUITES: &[&str] = &["bullseye", "bookworm", "trixie", "sid"];

/// A fetched kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub suite: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-50-amd64`.
    pub release: String,
    pub image: PathBuf,
}

pub fn dir() -> PathBuf {
    root().join("target/vmtest/kernels")
}

/// The kernel of `suite`, fetched unless it is already there.
pub fn ensure(suite: &str) -> Result<Kernel> {
    let dir = dir().join(suite);
    if let Some(kernel) = cached(suite, &dir) {
        return Ok(kernel);
    }
    step(&format!("fetching Debian {suite}'s kernel for the kernel matrix (apt, into {})", dir.display()));
    let _ = std::fs::remove_dir_all(&dir);
    let work = root().join("target/vmtest/apt").join(suite);
    let apt = crate::debian::Suite::open(&work.join("state"), suite)?;
    // linux-image-amd64 depends on the release's image package; in unstable that one only
    // depends on linux-binary-*, which holds the image.
    let mut wanted: Vec<String> = crate::debian::depends(&apt.cache(&["show", "linux-image-amd64"])?)
        .into_iter()
        .filter(|p| p.starts_with("linux-image-"))
        .take(1)
        .collect();
    let unpacked = work.join("unpacked");
    for _ in 0..2 {
        if wanted.is_empty() {
            break;
        }
        let debs = work.join("debs");
        let _ = std::fs::remove_dir_all(&debs);
        apt.download(&wanted, &debs)?;
        for deb in std::fs::read_dir(&debs)?.flatten() {
            extract_images(&deb.path(), &unpacked)?;
        }
        if let Some((image, release)) = find_image(&unpacked) {
            std::fs::create_dir_all(&dir)?;
            std::fs::copy(&image, dir.join("vmlinuz"))?;
            let btf = btf_of_image(&std::fs::read(&image)?)
                .with_context(|| format!("cannot take the BTF out of {}", image.display()))?;
            std::fs::write(dir.join("btf"), btf)?;
            // Written last: its presence marks a complete fetch.
            std::fs::write(dir.join("release"), &release)?;
            let _ = std::fs::remove_dir_all(&work);
            step(&format!("kernel {release} ready"));
            return cached(suite, &dir).context("the fetched kernel is incomplete");
        }
        let shows = wanted.iter().map(|p| apt.cache(&["show", p])).collect::<Result<Vec<_>>>()?;
        wanted = shows
            .iter()
            .flat_map(|s| crate::debian::depends(s))
            .filter(|p| p.starts_with("linux-binary-") || p.starts_with("linux-image-"))
            .collect();
    }
    bail!("no kernel image found in Debian {suite}'s linux-image-amd64 or its dependencies")
}

fn cached(suite: &str, dir: &Path) -> Option<Kernel> {
    let release = std::fs::read_to_string(dir.join("release")).ok()?;
    let image = dir.join("vmlinuz");
    (image.exists() && dir.join("btf").exists()).then(|| Kernel {
        suite: suite.to_string(),
        release: release.trim().to_string(),
        image,
    })
}

/// Unpacks only the kernel images of a .deb (not its thousands of modules).
fn extract_images(deb: &Path, into: &Path) -> Result<()> {
    std::fs::create_dir_all(into)?;
    let script = "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" --wildcards '*vmlinuz*' 2>/dev/null; true";
    run(Command::new("sh").args(["-c", script, "extract"]).arg(deb).arg(into))
}

/// `boot/vmlinuz-RELEASE` or `usr/lib/modules/RELEASE/vmlinuz` under `dir`.
fn find_image(dir: &Path) -> Option<(PathBuf, String)> {
    let entries = |d: PathBuf| std::fs::read_dir(d).into_iter().flatten().flatten();
    if let Some(e) = entries(dir.join("boot")).find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-")) {
        return Some((e.path(), e.file_name().to_string_lossy().trim_start_matches("vmlinuz-").to_string()));
    }
    entries(dir.join("usr/lib/modules"))
        .map(|e| (e.path().join("vmlinuz"), e.file_name().to_string_lossy().into_owned()))
        .find(|(image, _)| image.exists())
}

/// The `.BTF` section of the vmlinux inside a bzImage: the boot protocol's header gives the
/// compressed payload (boot protocol 2.08+), which xz, zstd or gzip unpack into an ELF file.
fn btf_of_image(image: &[u8]) -> Result<Vec<u8>> {
    let u32_at = |at: usize| image.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    if image.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage (no HdrS header)");
    }
    let setup_sectors = match image.get(0x1f1).copied().unwrap_or(0) {
        0 => 4,
        n => n as usize,
    };
    let (offset, length) = (u32_at(0x248).context("short header")?, u32_at(0x24c).context("short header")?);
    let start = (setup_sectors + 1) * 512 + offset as usize;
    let payload = image.get(start..start + length as usize).context("payload lies outside the image")?;
    // xz and zstd payloads end with the 4-byte uncompressed size, which the tools reject.
    let (tool, args, data): (&str, &[&str], &[u8]) = match payload {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => ("xz", &["-dc", "--single-stream"], &payload[..payload.len() - 4]),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => ("zstd", &["-dcq"], &payload[..payload.len() - 4]),
        [0x1f, 0x8b, ..] => ("gzip", &["-dc"], payload),
        _ => bail!("unknown compression of the kernel payload"),
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {tool}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    let _ = feeder.join();
    if !out.status.success() {
        bail!("{tool} cannot unpack the kernel payload");
    }
    use object::{Object, ObjectSection};
    let elf = object::File::parse(&*out.stdout).context("the unpacked kernel is not an ELF file")?;
    let btf = elf.section_by_name(".BTF").context("the kernel has no .BTF section")?;
    Ok(btf.data()?.to_vec())
}
