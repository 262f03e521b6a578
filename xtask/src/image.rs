//! `cargo xtask image`: rdev's container image (the repository's `Containerfile`) built with
//! Debian's daemonless `buildah`, written as an OCI image layout and optionally pushed.
//!
//! xtask stages the build context (the binary, the bundled plugins, TLS roots, a passwd
//! naming the image's uid), runs `buildah bud` on it with the vfs storage driver and chroot
//! isolation (no daemon, no overlay mount, no base image to download: the image is
//! `FROM scratch`), then pushes the result to `oci:<out>/oci` and, when asked, to a registry.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::plugins::{self, Layout};

/// The image's uid and gid: not root, and the value distroless images use for "nonroot".
pub const IMAGE_UID: u32 = 65532;
/// Where the binary lives in the image.
pub const IMAGE_BINARY: &str = "/opt/rdev/bin/rdev";
/// Where the bundled plugins live in the image (`RDEV_PLUGINS_DIR` in the Containerfile).
pub const IMAGE_PLUGINS_DIR: &str = "/opt/rdev/plugins";
/// The port the image listens on and exposes (`RDEV_LISTEN`, `EXPOSE`).
pub const IMAGE_PORT: u16 = 8080;
/// The image's data volume (`RDEV_DATA_DIR`).
pub const IMAGE_DATA_DIR: &str = "/var/lib/rdev";
/// The static target the release image's binary is built for: no shared library is needed
/// on `scratch`.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";
/// Debian's TLS roots, copied into the image for rdev's outbound HTTPS.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// The image name `examples/deploy/` runs: the workspace version as the tag.
pub fn default_tag() -> String {
    format!("ghcr.io/orchard9/rdev:{}", env!("CARGO_PKG_VERSION"))
}

/// What to build and where to put it.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The image's name in buildah's storage and the OCI layout.
    pub tag: String,
    /// A prebuilt `rdev` to put in the image; `None` builds the static release binary. A
    /// dynamically linked one (a test's debug build) brings the libraries `ldd` lists.
    pub rdev: Option<PathBuf>,
    /// Installed plugins to bundle; `None` builds them (`cargo xtask plugins`) and takes
    /// `target/plugins`.
    pub plugins_dir: Option<PathBuf>,
    /// Where the staged context, buildah's storage and the OCI layout go.
    pub out_dir: PathBuf,
    /// A buildah push destination (`docker://registry/name:tag`), when the image should go
    /// to a registry too.
    pub push: Option<String>,
    /// Whether the registry push requires HTTPS with verified certificates.
    pub tls_verify: bool,
}

impl ImageOptions {
    /// The defaults of `cargo xtask image`: the default tag, a static release build, output
    /// in `target/image`, no push.
    pub fn new(layout: &Layout) -> Self {
        Self {
            tag: default_tag(),
            rdev: None,
            plugins_dir: None,
            out_dir: layout.root.join("target/image"),
            push: None,
            tls_verify: true,
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The image's name.
    pub tag: String,
    /// The OCI image layout directory holding it (`index.json`, `blobs/sha256/…`).
    pub oci_layout: PathBuf,
    /// The staged build context (`rootfs/`, `data/`, `Containerfile`).
    pub context: PathBuf,
}

/// Builds the plugins and (unless given) the static release binary, stages the context,
/// builds the image with buildah and writes its OCI layout; pushes it when asked.
pub fn build(layout: &Layout, options: &ImageOptions) -> Result<BuiltImage> {
    let buildah = Buildah::find(&options.out_dir)?;
    let plugins_dir = match &options.plugins_dir {
        Some(dir) => dir.clone(),
        None => {
            plugins::build(layout)?;
            layout.plugins_dir()
        }
    };
    let binary = match &options.rdev {
        Some(path) => path.clone(),
        None => build_static(&layout.root)?,
    };
    let context = options.out_dir.join("context");
    stage(&context, &binary, &plugins_dir)?;
    fs::copy(
        layout.root.join("Containerfile"),
        context.join("Containerfile"),
    )
    .context("copying the Containerfile")?;
    buildah.run(&[
        "bud",
        "--isolation",
        "chroot",
        "--timestamp",
        "0",
        "--tag",
        &options.tag,
        "--file",
        &path_str(&context.join("Containerfile"))?,
        &path_str(&context)?,
    ])?;
    // A rebuild under the same tag leaves the previous image untagged in the storage.
    buildah.run(&["rmi", "--prune"])?;
    let oci_layout = options.out_dir.join("oci");
    remove_dir_if_exists(&oci_layout)?;
    let reference = options.tag.rsplit(':').next().unwrap_or("latest");
    buildah.run(&[
        "push",
        &options.tag,
        &format!("oci:{}:{reference}", path_str(&oci_layout)?),
    ])?;
    if let Some(destination) = &options.push {
        let tls = format!("--tls-verify={}", options.tls_verify);
        buildah.run(&["push", &tls, &options.tag, destination])?;
    }
    Ok(BuiltImage {
        tag: options.tag.clone(),
        oci_layout,
        context,
    })
}

/// Builds `rdev` for [`STATIC_TARGET`] in release mode and returns the executable.
fn build_static(root: &Path) -> Result<PathBuf> {
    let status = Command::new("rustup")
        .args(["target", "add", STATIC_TARGET])
        .status()
        .context("running rustup target add")?;
    if !status.success() {
        bail!("rustup could not add the {STATIC_TARGET} target ({status})");
    }
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["build", "--release", "--package", "rdev", "--bin", "rdev"])
        .args(["--target", STATIC_TARGET, "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo build for the static rdev")?;
    if !output.status.success() {
        bail!(
            "building the static rdev failed ({}); it needs Debian's musl-tools for the C \
             parts (ring, SQLite)",
            output.status
        );
    }
    crate::binary::executable_of(&output.stdout, "rdev")
}

/// Writes the build context the Containerfile expects into `context` (replacing it).
pub fn stage(context: &Path, binary: &Path, plugins_dir: &Path) -> Result<()> {
    remove_dir_if_exists(context)?;
    let rootfs = context.join("rootfs");
    let bin = rootfs.join(IMAGE_BINARY.trim_start_matches('/'));
    mkdirs(bin.parent().context("the binary's directory")?)?;
    strip_into(binary, &bin)?;
    for library in shared_libraries(binary)? {
        let dest = rootfs.join(library.strip_prefix("/").unwrap_or(&library));
        mkdirs(dest.parent().context("a library's directory")?)?;
        fs::copy(&library, &dest).with_context(|| format!("copying {}", library.display()))?;
    }
    let plugins = rootfs.join(IMAGE_PLUGINS_DIR.trim_start_matches('/'));
    mkdirs(&plugins)?;
    for file in bundled_plugin_files(plugins_dir)? {
        let name = file.file_name().context("a plugin file name")?;
        fs::copy(&file, plugins.join(name))
            .with_context(|| format!("copying {}", file.display()))?;
    }
    let ca = Path::new("/").join(CA_BUNDLE);
    let ca_dest = rootfs.join(CA_BUNDLE);
    mkdirs(ca_dest.parent().context("the CA bundle's directory")?)?;
    fs::copy(&ca, &ca_dest)
        .with_context(|| format!("copying {} (apt-get install ca-certificates)", ca.display()))?;
    write_accounts(&rootfs.join("etc"))?;
    let tmp = rootfs.join("tmp");
    mkdirs(&tmp)?;
    set_mode(&tmp, 0o1777)?;
    // The data directory's parents come root-owned with the rootfs: the `--chown` copy of
    // `data/` would otherwise create them owned by the image's user.
    let data_parent = Path::new(IMAGE_DATA_DIR)
        .parent()
        .context("the data dir's parent")?;
    mkdirs(&rootfs.join(data_parent.strip_prefix("/").unwrap_or(data_parent)))?;
    mkdirs(&context.join("data"))
}

/// The component and manifest files of every installed plugin in `dir`, sorted.
pub fn bundled_plugin_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|ext| ext == "wasm" || ext == "toml")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no plugin (cargo xtask plugins)", dir.display());
    }
    Ok(files)
}

/// The image's accounts: only its own user and group, so tools and libraries that look the
/// uid up find a name and a home.
fn write_accounts(etc: &Path) -> Result<()> {
    let uid = IMAGE_UID;
    fs::write(
        etc.join("passwd"),
        format!("rdev:x:{uid}:{uid}:rdev:{IMAGE_DATA_DIR}:/sbin/nologin\n"),
    )
    .context("writing etc/passwd")?;
    fs::write(etc.join("group"), format!("rdev:x:{uid}:\n")).context("writing etc/group")
}

/// Copies `binary` to `dest` without its debug sections (symbols stay, for backtraces),
/// with `strip` from binutils when it is installed, else unchanged.
fn strip_into(binary: &Path, dest: &Path) -> Result<()> {
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dest)
        .arg(binary)
        .status();
    if !stripped.is_ok_and(|status| status.success()) {
        fs::copy(binary, dest).with_context(|| format!("copying {}", binary.display()))?;
    }
    set_mode(dest, 0o755)
}

/// The shared libraries (and the dynamic loader) `binary` needs, as `ldd` lists them;
/// empty for a static binary.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if text.contains("statically linked") || stderr.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        bail!("ldd {} failed: {stderr}", binary.display());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, resolved)) => resolved.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(path) if path.starts_with('/') => libraries.push(PathBuf::from(path)),
            // linux-vdso.so.1 lives in the kernel.
            _ if line.contains("vdso") => {}
            _ => bail!(
                "ldd could not resolve a library of {}: {line}",
                binary.display()
            ),
        }
    }
    Ok(libraries)
}

/// buildah with its storage under the output directory (vfs driver: no overlay mounts).
struct Buildah {
    storage: PathBuf,
    run_root: PathBuf,
}

impl Buildah {
    /// Finds buildah, or says how to install it.
    fn find(out_dir: &Path) -> Result<Self> {
        let version = Command::new("buildah").arg("--version").output();
        if !version.is_ok_and(|out| out.status.success()) {
            bail!("buildah is not installed (apt-get install buildah)");
        }
        Ok(Self {
            storage: out_dir.join("storage"),
            run_root: out_dir.join("run"),
        })
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        let status = Command::new("buildah")
            .arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(&self.storage)
            .arg("--runroot")
            .arg(&self.run_root)
            .args(args)
            .status()
            .context("running buildah")?;
        if !status.success() {
            bail!("buildah {} failed ({status})", args.join(" "));
        }
        Ok(())
    }
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

fn mkdirs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}
