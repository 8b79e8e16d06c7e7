//! Peak RSS of archiving a commit that holds one large file of zeros, two ways on the same
//! repository, each in a fresh child process (so each peak is its own):
//!
//! - `stream`: the receiver's archive (`pipeline::archive`): contents streamed from
//!   `git cat-file --batch`;
//! - `whole`: what the receiver did before: each blob loaded whole with git2
//!   (`find_blob().content()`), then written to the same tar + gzip;
//! - `baseline`: the process opening the repository and nothing else.
//!
//! Usage: `cargo run --release -p flynn-gitreceiver --example archive_rss [SIZE_MIB]`
//! (default 2048: a 2 GiB file, sparse on disk; git stores it as ~2 MB). Needs `git`.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use flynn_gitreceiver::pipeline::archive::{Limits, Request, archive};

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The old path: every blob of the root tree loaded whole, into tar + gzip.
fn archive_whole(repo: &Path, commit: &str, out: &Path) {
    let repo = git2::Repository::open(repo).unwrap();
    let commit = repo
        .find_commit(git2::Oid::from_str(commit).unwrap())
        .unwrap();
    let tree = commit.tree().unwrap();
    let file = std::fs::File::create(out.join("whole.tar.gz")).unwrap();
    let gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::with_capacity(256 * 1024, file),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    for entry in tree.iter() {
        let blob = repo.find_blob(entry.id()).unwrap();
        let content = blob.content();
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, entry.name().unwrap(), content)
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

fn child(mode: &str, repo: &Path, commit: &str, out: &Path) {
    match mode {
        "baseline" => {
            git2::Repository::open(repo).unwrap();
        }
        "whole" => archive_whole(repo, commit, out),
        "stream" => {
            let a = archive(
                &Request {
                    repo: &repo.join(".git"),
                    quarantine: None,
                    commit,
                    tmp_dir: out,
                    git: Path::new("git"),
                    limits: Limits {
                        max_source_bytes: u64::MAX,
                        ..Limits::default()
                    },
                },
                &|| false,
            )
            .unwrap();
            eprintln!("stream: {} bytes of tar.gz", a.size);
        }
        other => panic!("unknown mode {other}"),
    }
    println!("{}", peak_rss_kib());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        child(&args[2], Path::new(&args[3]), &args[4], Path::new(&args[5]));
        return;
    }
    let mib: u64 = args.get(1).map_or(2048, |s| s.parse().expect("SIZE_MIB"));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git(w, &["init", "-q", "-b", "main"]);
    std::fs::File::create(w.join("zeros.bin"))
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    git(w, &["add", "."]);
    git(w, &["commit", "-q", "-m", "zeros"]);
    let commit = git(w, &["rev-parse", "HEAD"]);
    let out = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let measure = |mode: &str| -> u64 {
        let o = Command::new(&exe)
            .args(["child", mode])
            .arg(w)
            .arg(&commit)
            .arg(out.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let baseline = measure("baseline");
    let stream = measure("stream");
    let whole = measure("whole");
    println!("archiving a commit with a {mib} MiB file of zeros, peak RSS (VmHWM) of the process:");
    println!("  baseline (open the repository) {:>8} KiB", baseline);
    println!("  streamed (the receiver now)    {:>8} KiB", stream);
    println!("  loaded whole (before)          {:>8} KiB", whole);
    println!(
        "  growth over baseline: streamed {} KiB, whole {} KiB; whole / streamed peak = {:.1}x",
        stream.saturating_sub(baseline),
        whole.saturating_sub(baseline),
        whole as f64 / stream as f64
    );
}
