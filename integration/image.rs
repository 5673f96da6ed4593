//! The image `deploy/build-image.sh --oci` writes with no container engine: an
//! OCI archive holding the amd64 and the arm64 image under the one name the
//! manifests in `deploy/` reference. Checked offline, byte by byte (every blob's
//! sha256 and size, the platforms, each layer's binary by `file`), by skopeo
//! (an independent reader of OCI archives) and by a private containerd
//! (`ctr images import`, what `microk8s ctr image import` runs).
//!
//! The binaries are the release builds of `deploy/build-release.sh`: taken from
//! `$ROS2_CNI_DIST` or `dist/` when both are there, otherwise built by this
//! test into `target/image-test` (its own target dir: `cargo test` holds the
//! lock of `target/` while tests run), which takes minutes the first time.
//! Needs `file`, `tar`, `gzip`, `sha256sum`, skopeo and containerd (Debian
//! packages `skopeo containerd`).

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const ARCHES: [&str; 2] = ["amd64", "arm64"];
const EPOCH: &str = "1700000000";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{tool} is needed: apt-get install {package}");
}

fn sha256(path: &Path) -> String {
    let out = stdout(Command::new("sha256sum").arg(path));
    format!("sha256:{}", &out[..64])
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("ros2-cni-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The directory with ros2-cni-amd64 and ros2-cni-arm64 (built once per run).
fn dist() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| {
        need("file", "file");
        let given = std::env::var_os("ROS2_CNI_DIST").map(PathBuf::from);
        let d = given.clone().unwrap_or_else(|| root().join("dist"));
        if ARCHES
            .iter()
            .all(|a| d.join(format!("ros2-cni-{a}")).is_file())
        {
            return d;
        }
        assert!(
            given.is_none(),
            "ROS2_CNI_DIST={d:?} lacks ros2-cni-amd64 or -arm64"
        );
        let d = root().join("target/image-test/dist");
        eprintln!("image: building the release binaries (deploy/build-release.sh --out {d:?})");
        run(Command::new(root().join("deploy/build-release.sh"))
            .args(["--out".as_ref(), d.as_os_str()])
            .env("CARGO_TARGET_DIR", root().join("target/image-test")));
        d
    })
}

/// The image name every manifest in deploy/ uses.
fn manifests_image() -> String {
    let mut names = BTreeSet::new();
    for m in [
        "deploy/microk8s/ros2-cni.yaml",
        "deploy/generic/ros2-cni.yaml",
    ] {
        let text = std::fs::read_to_string(root().join(m)).unwrap();
        for line in text.lines() {
            if let Some(img) = line.trim().strip_prefix("image: ") {
                names.insert(img.trim_matches('"').to_string());
            }
        }
    }
    assert_eq!(names.len(), 1, "one image name in deploy/: {names:?}");
    let name = names.pop_first().unwrap();
    assert_eq!(
        name,
        format!("localhost/ros2-cni:{}", env!("CARGO_PKG_VERSION"))
    );
    name
}

/// Runs build-image.sh --oci on the release binaries into `out`.
fn build_image(out: &Path, args: &[&str]) {
    run(Command::new(root().join("deploy/build-image.sh"))
        .args(["--oci", "--bin-dir"])
        .arg(dist())
        .args(args)
        .arg("--out")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", EPOCH));
}

/// An unpacked archive: its JSON read through descriptors, every read checked
/// against the descriptor's digest and size.
struct Layout {
    dir: PathBuf,
    /// every blob a descriptor named
    referenced: BTreeSet<String>,
}

impl Layout {
    fn blob_path(&self, desc: &Value) -> PathBuf {
        let digest = desc["digest"].as_str().expect("descriptor digest");
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir.join("blobs/sha256").join(hex)
    }

    /// The blob `desc` names, with its digest and size checked.
    fn blob(&mut self, desc: &Value) -> PathBuf {
        let p = self.blob_path(desc);
        assert!(p.is_file(), "blob of {desc} missing");
        assert_eq!(sha256(&p), desc["digest"], "digest of {p:?}");
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            desc["size"].as_u64().expect("descriptor size"),
            "size of {p:?}"
        );
        self.referenced
            .insert(desc["digest"].as_str().unwrap().to_string());
        p
    }

    fn json(&mut self, desc: &Value, media_type: &str) -> Value {
        assert_eq!(desc["mediaType"], media_type, "{desc}");
        let p = self.blob(desc);
        let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        if media_type != "application/vnd.oci.image.config.v1+json" {
            assert_eq!(v["mediaType"], media_type);
            assert_eq!(v["schemaVersion"], 2);
        }
        v
    }
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[test]
fn oci_archive_holds_amd64_and_arm64_under_the_manifests_image_name() {
    let name = manifests_image();
    let tmp = TempDir::new("image");
    let archive = tmp.0.join("image.tar");
    build_image(&archive, &[]);

    // the archive: oci-layout, index.json and blobs only
    let x = tmp.0.join("x");
    std::fs::create_dir(&x).unwrap();
    let list = stdout(Command::new("tar").arg("-tf").arg(&archive));
    for entry in list.lines() {
        assert!(
            ["oci-layout", "index.json", "blobs/", "blobs/sha256/"].contains(&entry)
                || entry.starts_with("blobs/sha256/") && entry.len() == 13 + 64,
            "unexpected entry {entry}"
        );
    }
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&x));
    let layout: Value =
        serde_json::from_slice(&std::fs::read(x.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout, json!({"imageLayoutVersion": "1.0.0"}));
    let top: Value = serde_json::from_slice(&std::fs::read(x.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["schemaVersion"], 2);
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "one image: {top}");
    let entry = &entries[0];
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        name.as_str()
    );
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        env!("CARGO_PKG_VERSION")
    );

    let mut l = Layout {
        dir: x.clone(),
        referenced: BTreeSet::new(),
    };
    let index = l.json(entry, INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    let platforms: BTreeSet<String> = manifests
        .iter()
        .map(|m| {
            let p = &m["platform"];
            format!(
                "{}/{}{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap(),
                p["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from(["linux/amd64".to_string(), "linux/arm64/v8".to_string()])
    );

    for m in manifests {
        let arch = m["platform"]["architecture"].as_str().unwrap();
        let manifest = l.json(m, MANIFEST);
        let config = l.json(&manifest["config"], CONFIG);
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["Entrypoint"], json!(["/ros2-cni"]));
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{arch}: one layer");
        assert_eq!(layers[0]["mediaType"], LAYER);
        let gz = l.blob(&layers[0]);

        // the layer: diff_id is the sha256 of the uncompressed tar
        let tar = tmp.0.join(format!("layer-{arch}.tar"));
        let raw = run(Command::new("gzip").arg("-dc").arg(&gz)).stdout;
        std::fs::write(&tar, &raw).unwrap();
        assert_eq!(
            config["rootfs"],
            json!({"type": "layers", "diff_ids": [sha256(&tar)]})
        );
        let listing = stdout(Command::new("tar").arg("-tvf").arg(&tar));
        let files: Vec<&str> = listing.lines().collect();
        assert_eq!(
            files.len(),
            1,
            "{arch}: only /ros2-cni in the layer: {listing}"
        );
        assert!(
            files[0].starts_with("-rwxr-xr-x 0/0") && files[0].ends_with(" ros2-cni"),
            "{arch}: {}",
            files[0]
        );
        let out = tmp.0.join(arch);
        std::fs::create_dir(&out).unwrap();
        run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&out));
        let bin = out.join("ros2-cni");
        assert_eq!(
            std::fs::read(&bin).unwrap(),
            std::fs::read(dist().join(format!("ros2-cni-{arch}"))).unwrap(),
            "{arch}: the layer holds dist/ros2-cni-{arch}"
        );
        let what = stdout(Command::new("file").arg("-b").arg(&bin));
        let machine = if arch == "amd64" {
            "x86-64"
        } else {
            "ARM aarch64"
        };
        assert!(
            what.starts_with("ELF 64-bit LSB") && what.contains(machine),
            "{arch}: {what}"
        );
        assert!(
            what.contains("statically linked") || what.contains("static-pie linked"),
            "{arch}: not static: {what}"
        );
    }

    // no blob that nothing references
    let blobs: BTreeSet<String> = std::fs::read_dir(x.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert_eq!(blobs, l.referenced);

    // the same binaries give the same archive, byte for byte
    let again = tmp.0.join("again.tar");
    build_image(&again, &[]);
    assert_eq!(
        sha256(&archive),
        sha256(&again),
        "build-image.sh --oci is reproducible"
    );
}

#[test]
fn skopeo_reads_both_platforms() {
    need("skopeo", "skopeo");
    let tmp = TempDir::new("image-skopeo");
    let archive = tmp.0.join("image.tar");
    build_image(&archive, &[]);
    let src = format!("oci-archive:{}", archive.display());
    for arch in ARCHES {
        let v: Value = serde_json::from_str(&stdout(Command::new("skopeo").args([
            "inspect",
            "--override-os",
            "linux",
            "--override-arch",
            arch,
            &src,
        ])))
        .unwrap();
        assert_eq!(v["Architecture"], arch, "{v}");
        assert_eq!(v["Os"], "linux");
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    }
    // a copy of every platform verifies every digest and size on the way
    let dst = format!("oci:{}:copy", tmp.0.join("copy").display());
    run(Command::new("skopeo").args(["copy", "--quiet", "--all", &src, &dst]));
}

/// A containerd of its own (socket, root and state in a temporary directory),
/// stopped when dropped.
struct Containerd {
    dir: TempDir,
    child: std::process::Child,
}

impl Containerd {
    fn start() -> Containerd {
        need("containerd", "containerd");
        let dir = TempDir::new("containerd");
        let d = dir.0.display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/sock\"\n[ttrpc]\n  address = \"{d}/sock.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n"
        );
        std::fs::write(dir.0.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.0.join("log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.0.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd");
        let c = Containerd { dir, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "containerd did not answer: {}",
                std::fs::read_to_string(c.dir.0.join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.0.join("sock"))
            .args(["--namespace", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr")
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // snapshots may be mounted below root
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}/[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.0.display()
            ))
            .status();
    }
}

/// What containerd must hold after importing `archive`: the index's digest,
/// and per architecture its manifest, config and layer digests and the
/// layer's diff_id (the key of its unpacked snapshot: a one-layer chain).
struct Expected {
    index: String,
    blobs: std::collections::BTreeMap<String, BTreeSet<String>>,
    manifests: std::collections::BTreeMap<String, String>,
    diff_ids: std::collections::BTreeMap<String, String>,
}

fn expected(archive: &Path, tmp: &Path) -> Expected {
    let x = tmp.join("expected");
    std::fs::create_dir_all(&x).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&x));
    let mut l = Layout {
        dir: x.clone(),
        referenced: BTreeSet::new(),
    };
    let top: Value = serde_json::from_slice(&std::fs::read(x.join("index.json")).unwrap()).unwrap();
    let entry = &top["manifests"][0];
    let index = l.json(entry, INDEX);
    let mut e = Expected {
        index: entry["digest"].as_str().unwrap().to_string(),
        blobs: Default::default(),
        manifests: Default::default(),
        diff_ids: Default::default(),
    };
    for m in index["manifests"].as_array().unwrap() {
        let arch = m["platform"]["architecture"].as_str().unwrap().to_string();
        let manifest = l.json(m, MANIFEST);
        let config = l.json(&manifest["config"], CONFIG);
        let digests = [
            &m["digest"],
            &manifest["config"]["digest"],
            &manifest["layers"][0]["digest"],
        ]
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
        e.blobs.insert(arch.clone(), digests);
        e.manifests
            .insert(arch.clone(), m["digest"].as_str().unwrap().to_string());
        e.diff_ids.insert(
            arch,
            config["rootfs"]["diff_ids"][0]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    e
}

#[test]
fn containerd_imports_it_under_the_manifests_name() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "needs root (containerd)"
    );
    let name = manifests_image();
    let tmp = TempDir::new("image-ctr");
    let archive = tmp.0.join("image.tar");
    build_image(&archive, &[]);
    let want = expected(&archive, &tmp.0);
    let a = archive.to_str().unwrap();
    let native = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no image for {other}"),
    };
    let other = if native == "amd64" { "arm64" } else { "amd64" };
    let ctd = Containerd::start();
    // content -> its labels. The importer ingests every blob of the archive;
    // what containerd keeps of it are the blobs its index's labels reference
    // (containerd.io/gc.ref.content.m.N: the manifests), the rest goes at the
    // next garbage collection, which runs in the background
    let content = || -> std::collections::BTreeMap<String, String> {
        ctd.ctr_ok(&["content", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_string(), f.next_back()?.to_string()))
            })
            .collect()
    };
    let kept_manifests = || -> BTreeSet<String> {
        let c = content();
        let labels = c.get(&want.index).expect("the index in the content store");
        labels
            .split(',')
            .filter(|l| l.starts_with("containerd.io/gc.ref.content.m."))
            .filter_map(|l| l.split_once('=').map(|(_, d)| d.to_string()))
            .collect()
    };
    let snapshots = || -> BTreeSet<String> {
        ctd.ctr_ok(&["snapshots", "--snapshotter", "native", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    };

    // as the install docs say: `microk8s ctr image import FILE` (microk8s' ctr
    // uses the k8s.io namespace): the index under the manifests' name, with
    // both platforms, and this machine's platform kept and unpacked (the native
    // snapshotter: works on any file system)
    ctd.ctr_ok(&["images", "import", "--snapshotter", "native", a]);
    let ls = ctd.ctr_ok(&["images", "ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in\n{ls}"));
    assert!(line.contains(&format!("{INDEX} {}", want.index)), "{line}");
    assert!(
        line.contains("linux/amd64") && line.contains("linux/arm64/v8"),
        "{line}"
    );
    assert_eq!(
        kept_manifests(),
        BTreeSet::from([want.manifests[native].clone()]),
        "a plain import keeps the {native} manifest only"
    );
    let c = content();
    for d in &want.blobs[native] {
        assert!(
            c.contains_key(d),
            "{d} of {native} not in the content store"
        );
    }
    assert_eq!(
        snapshots(),
        BTreeSet::from([want.diff_ids[native].clone()]),
        "the {native} layer unpacked"
    );

    // --all-platforms keeps every platform's content; --platform unpacks the
    // other architecture's layer, as a node of that architecture would
    ctd.ctr_ok(&["images", "rm", "--sync", &name]);
    let p = format!("linux/{other}");
    ctd.ctr_ok(&[
        "images",
        "import",
        "--all-platforms",
        "--platform",
        &p,
        "--snapshotter",
        "native",
        a,
    ]);
    let mut all: BTreeSet<String> = want.blobs.values().flatten().cloned().collect();
    all.insert(want.index.clone());
    assert_eq!(all.len(), 7);
    assert_eq!(
        kept_manifests(),
        want.manifests.values().cloned().collect(),
        "--all-platforms keeps both manifests"
    );
    let c = content();
    for d in &all {
        assert!(c.contains_key(d), "{d} not in the content store");
    }
    assert!(
        snapshots().contains(&want.diff_ids[other]),
        "the {other} layer unpacked: {:?}",
        snapshots()
    );

    // an image without this machine's platform cannot be unpacked here, so
    // the imports above really unpacked the platform they named
    let other_only = tmp.0.join("other-only.tar");
    build_image(&other_only, &["--arch", other]);
    let out = ctd.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        other_only.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "an {other}-only image unpacked on {native}"
    );
}
