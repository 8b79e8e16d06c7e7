//! The russh server configuration: modern algorithms only, set explicitly (not russh's
//! defaults, which include NIST curves and 2048-bit DH), public keys only, timeouts.

use std::borrow::Cow;
use std::time::Duration;

use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::server::Config;
use russh::{MethodKind, MethodSet, Preferred, cipher, compression, kex, mac};

use crate::settings::Settings;

/// Key exchange: the ML-KEM/X25519 hybrid first (post-quantum, OpenSSH 9.9+), X25519 for
/// older clients (Debian bookworm's OpenSSH 9.2 has no ML-KEM), plus the two extension
/// markers: `ext-info-s` (so `server-sig-algs` is sent) and strict KEX (Terrapin).
pub const KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];
/// AEAD ciphers only: no CBC, no CTR+MAC.
pub const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
];
/// Only used with non-AEAD ciphers, which are not offered; encrypt-then-MAC SHA-2 for
/// completeness (no SHA-1).
pub const MACS: &[mac::Name] = &[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM];
/// Pack data is already compressed.
pub const COMPRESSION: &[compression::Name] = &[compression::NONE];
/// User key algorithms accepted (also sent as `server-sig-algs`): Ed25519 and RSA with
/// SHA-2 (RSA keys are still common); no `ssh-rsa` (SHA-1), no DSA, no NIST ECDSA. The host
/// key is Ed25519, so that is the only host key algorithm offered.
pub fn key_algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::Ed25519,
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
    ]
}

/// The server configuration for `host_key`.
pub fn server_config(settings: &Settings, host_key: PrivateKey) -> Config {
    Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-flynn-gitreceiver")),
        // keyboard-interactive never succeeds: it only carries the message that says why
        // the keys were refused (see `Connection::auth_keyboard_interactive`).
        methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::KeyboardInteractive][..]),
        // Public key refusals are not secret (the registry is readable by every user) and
        // OpenSSH does not delay them either; a delay per refused key would make users
        // whose agent offers several keys wait for each one.
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        preferred: Preferred {
            kex: Cow::Borrowed(KEX),
            key: Cow::Owned(key_algorithms()),
            cipher: Cow::Borrowed(CIPHERS),
            mac: Cow::Borrowed(MACS),
            compression: Cow::Borrowed(COMPRESSION),
            ..Preferred::default()
        },
        max_auth_attempts: 10,
        // Large windows and packets: pushes are bulk transfers (bssh measured 6x with
        // 8 MiB / 64 KiB over russh's defaults).
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 65535,
        channel_buffer_size: 100,
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(settings.keepalive_interval),
        keepalive_max: 3,
        nodelay: true,
        ..Config::default()
    }
}
