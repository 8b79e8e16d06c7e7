//! The builder's benchmark: prints figures, and ratios against a peer measured in the same run.
//!
//! ```sh
//! cargo run --release -p flynn-builder --example bench
//! ```
//!
//! 1. Build time of the Python sample, cold vs warm cache (also with a generated 2000-module
//!    vendored dependency, so the install step has weight), and the slug size.
//! 2. slugrunner start-to-listening for a 50 MB slug: fetch from the store, unpack, start
//!    the web process, first accepted connection.
//! 3. Slug store upload and download of a 200 MB blob vs nginx (WebDAV PUT, static GET) on
//!    the same machine, with curl as the client of both; ratio shelf / nginx.
//!
//! Needs python3, curl and nginx on the machine.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use flynn_builder::{
    build::{BuildOptions, DEFAULT_STACK, Source, build},
    client::HttpClient,
    output::{Log, human_size},
    runner,
    slug::{self, DEFAULT_MAX_SIZE},
    store::{LocalStore, server},
};

const TOKEN: &str = "bench-token-0123456789";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

async fn start_shelf(root: &Path) -> String {
    let store = LocalStore::open(root).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shelf = Arc::new(server::Shelf::new(store, TOKEN.into()));
    tokio::spawn(server::serve(listener, shelf, std::future::pending()));
    format!("http://{addr}")
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp {}", from.display());
}

async fn timed_build(app: &Path, store: &str, name: &str, cache: &str, work: &Path) -> (f64, u64) {
    let src = work.join(format!("{name}-src.tgz"));
    std::fs::write(&src, slug::tar_gz_dir(app).unwrap()).unwrap();
    let w = tempfile::tempdir_in(work).unwrap();
    let opts = BuildOptions {
        app: name.into(),
        source: Source::File(src),
        work_dir: w.path().to_owned(),
        buildpacks_dir: fixtures().join("buildpacks"),
        buildpack_urls: Vec::new(),
        buildpack_cache: None,
        env: Default::default(),
        slug_put_url: Some(format!("{store}/slugs/{name}.tgz")),
        slug_file: None,
        slug_url: None,
        cache_url: Some(format!("{store}/cache/{cache}.tgz")),
        token: Some(TOKEN.into()),
        max_slug_size: DEFAULT_MAX_SIZE,
        stack: DEFAULT_STACK.into(),
        source_version: None,
    };
    let started = Instant::now();
    let result = build(&opts, &Log::new(std::io::sink()))
        .await
        .expect("the build succeeds");
    (started.elapsed().as_secs_f64(), result.size)
}

async fn bench_builds(store: &str, work: &Path) {
    println!("## Build time, Python sample (slugbuilder in-process, store on loopback)");
    let plain = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("apps/python-web"), plain.path());
    let big = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("apps/python-web"), big.path());
    let pkg = big.path().join("vendor/bigdep/bigdep");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    for i in 0..2000 {
        let mut src = String::new();
        for j in 0..40 {
            src.push_str(&format!(
                "def f{j}(x):\n    return [x * {i} + k for k in range({j})]\n\n"
            ));
        }
        std::fs::write(pkg.join(format!("m{i}.py")), src).unwrap();
    }
    std::fs::write(big.path().join("requirements.txt"), "greeting\nbigdep\n").unwrap();

    println!("| app | cold | warm | warm/cold | slug size |");
    println!("| --- | --- | --- | --- | --- |");
    for (label, dir, name) in [
        ("python-web fixture", plain.path(), "py"),
        ("python-web + 2000-module vendored dep", big.path(), "pybig"),
    ] {
        let (cold, size) = timed_build(dir, store, name, name, work).await;
        let (warm, _) = timed_build(dir, store, name, name, work).await;
        println!(
            "| {label} | {cold:.2} s | {warm:.2} s | {:.2} | {} ({size} B) |",
            warm / cold,
            human_size(size)
        );
    }
    println!();
}

fn wait_port(port: u16, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

async fn bench_runner(store: &str, work: &Path) {
    println!("## slugrunner start-to-listening, 50 MB slug (incompressible payload)");
    let app = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 50 * 1024 * 1024];
    rand::fill(&mut data[..]);
    std::fs::write(app.path().join("payload.bin"), &data).unwrap();
    let busybox = Path::new("/bin/busybox").exists();
    let web = if busybox {
        "exec busybox httpd -f -p $PORT"
    } else {
        "exec python3 -m http.server $PORT"
    };
    std::fs::write(app.path().join("Procfile"), format!("web: {web}\n")).unwrap();
    let slug_path = work.join("big-slug.tgz");
    let info = slug::pack(app.path(), &slug_path, DEFAULT_MAX_SIZE).unwrap();
    let client = HttpClient::new(Some(TOKEN.into()));
    let url = format!("{store}/slugs/big.tgz");
    client
        .put_file(&url, &slug_path, Some(&info.sha256))
        .await
        .unwrap();
    let reader = HttpClient::new(Some(TOKEN.into()));

    let mut runs = Vec::new();
    for _ in 0..5 {
        let dest = tempfile::tempdir_in(work).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Instant::now();
        runner::fetch_slug(
            &runner::SlugSource::Url(url.clone()),
            &reader,
            dest.path(),
            Some(&info.sha256),
        )
        .await
        .unwrap();
        let unpacked = started.elapsed();
        let (line, ty) =
            runner::resolve_command(dest.path(), &["start".into(), "web".into()]).unwrap();
        let mut cmd = runner::app_command(dest.path(), &line, ty.as_deref());
        cmd.env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        assert!(wait_port(port, Duration::from_secs(20)), "the app listened");
        let listening = started.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        runs.push((unpacked, listening));
    }
    runs.sort_by_key(|r| r.1);
    let (unpacked, listening) = runs[runs.len() / 2];
    println!(
        "slug {} ({} B); web = `{web}`; median of {}: fetch+verify+unpack {:.0} ms, start-to-listening {:.0} ms",
        human_size(info.size),
        info.size,
        runs.len(),
        unpacked.as_secs_f64() * 1000.0,
        listening.as_secs_f64() * 1000.0
    );
    println!();
}

fn curl(args: &[&str]) -> f64 {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-f", "-o", "/dev/null"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

/// nginx, stopped with SIGTERM on drop (SIGKILL would orphan its workers).
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn start_nginx(dir: &Path) -> (Nginx, u16) {
    use std::os::unix::fs::PermissionsExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // nginx's workers run as an unprivileged user when started as root: open the way.
    let tmp = std::env::temp_dir();
    let mut p = Some(dir);
    while let Some(d) = p.filter(|d| d.starts_with(&tmp) && *d != tmp) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        p = d.parent();
    }
    for d in ["www", "tmp", "logs"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
        std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let conf = format!(
        "worker_processes 2;\ndaemon off;\npid {p}/nginx.pid;\nerror_log stderr warn;\nevents {{}}\n\
         http {{\n  access_log off;\n  sendfile on;\n  client_max_body_size 0;\n  client_body_temp_path {p}/tmp;\n\
         proxy_temp_path {p}/tmp;\n  fastcgi_temp_path {p}/tmp;\n  uwsgi_temp_path {p}/tmp;\n  scgi_temp_path {p}/tmp;\n\
         server {{\n    listen 127.0.0.1:{port};\n    root {p}/www;\n    location / {{ dav_methods PUT DELETE; create_full_put_path on; }}\n  }}\n}}\n",
        p = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed");
    let nginx = Nginx(child);
    assert!(wait_port(port, Duration::from_secs(10)), "nginx listened");
    (nginx, port)
}

fn bench_store(store: &str, work: &Path) {
    println!("## Slug store vs nginx, 200 MB blob on loopback, curl as the client (best of 3)");
    let blob = work.join("blob.bin");
    {
        let mut f = std::fs::File::create(&blob).unwrap();
        let mut chunk = vec![0u8; 1024 * 1024];
        for _ in 0..200 {
            rand::fill(&mut chunk[..]);
            f.write_all(&chunk).unwrap();
        }
    }
    let mb = 200.0;
    let blob_s = blob.to_str().unwrap();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let ngx_dir = tempfile::tempdir_in(work).unwrap();
    let (ngx, port) = start_nginx(ngx_dir.path());
    let ngx_url = format!("http://127.0.0.1:{port}/blob.bin");
    let shelf_url = format!("{store}/blobs/blob.bin");

    let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(f64::MAX, f64::min);
    let shelf_up = best(&|| curl(&["-T", blob_s, "-H", &auth, &shelf_url]));
    let ngx_up = best(&|| curl(&["-T", blob_s, &ngx_url]));
    let shelf_down = best(&|| curl(&["-H", &auth, &shelf_url]));
    let ngx_down = best(&|| curl(&[&ngx_url]));
    drop(ngx);

    println!("| | shelf | nginx | shelf / nginx (throughput) |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| upload (PUT) | {:.0} MB/s ({shelf_up:.2} s) | {:.0} MB/s ({ngx_up:.2} s) | {:.2} |",
        mb / shelf_up,
        mb / ngx_up,
        ngx_up / shelf_up
    );
    println!(
        "| download (GET) | {:.0} MB/s ({shelf_down:.2} s) | {:.0} MB/s ({ngx_down:.2} s) | {:.2} |",
        mb / shelf_down,
        mb / ngx_down,
        ngx_down / shelf_down
    );
    println!(
        "(shelf fsyncs and sha256-hashes every upload before renaming it into place; nginx's DAV PUT does neither)"
    );
}

#[tokio::main]
async fn main() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("shelf");
    let store = start_shelf(&root).await;
    println!(
        "# flynn-builder benchmark ({} CPUs)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    bench_builds(&store, work.path()).await;
    bench_runner(&store, work.path()).await;
    let s = store.clone();
    let w = work.path().to_owned();
    tokio::task::spawn_blocking(move || bench_store(&s, &w))
        .await
        .unwrap();
}
