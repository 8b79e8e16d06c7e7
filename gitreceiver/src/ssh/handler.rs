//! One SSH connection: public key authentication against the key registry, and the
//! replies to channel requests. The work of a channel runs in its own task
//! (`channel::serve`), which owns and always drains the channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use russh::keys::PublicKey;
use russh::server::{
    Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::keys::{Identity, Lookup, fingerprint};
use crate::shared::Shared;

/// The only SSH user name; the key says who the user is.
pub const SSH_USER: &str = "git";

/// Per-connection state.
pub struct Connection {
    shared: Arc<Shared>,
    authenticated: Arc<AtomicBool>,
    /// Cancelled when the connection ends.
    closed: CancellationToken,
    identity: Option<Identity>,
    /// Fingerprints of offered keys that are not registered, for the refusal message.
    unknown_keys: Vec<String>,
    /// Why registered keys the client proved it holds may not log in (expired, old
    /// format): said only after the signature, so an offer alone learns nothing.
    unusable: Vec<String>,
    wrong_user: Option<String>,
    /// Whether the refusal message was sent (keyboard-interactive) already.
    hinted: bool,
    sessions: usize,
    /// The connection's span (peer address): russh runs the handler in a task of its own.
    span: tracing::Span,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        authenticated: Arc<AtomicBool>,
        closed: CancellationToken,
        span: tracing::Span,
    ) -> Self {
        Self {
            span,
            shared,
            authenticated,
            closed,
            identity: None,
            unknown_keys: Vec::new(),
            unusable: Vec::new(),
            wrong_user: None,
            hinted: false,
            sessions: 0,
        }
    }

    /// What the registry says of `key` for `user`, now (expiry is checked at every
    /// authentication). Unknown keys are remembered for the refusal message.
    fn check(&mut self, user: &str, key: &PublicKey) -> Lookup {
        if user != SSH_USER {
            self.wrong_user = Some(user.chars().take(64).collect());
            return Lookup::Unknown;
        }
        let found = self
            .shared
            .keys
            .lookup_at(key, k8s_openapi::jiff::Timestamp::now());
        if found == Lookup::Unknown {
            let fp = fingerprint(key);
            if !self.unknown_keys.contains(&fp) && self.unknown_keys.len() < 8 {
                self.unknown_keys.push(fp);
            }
        }
        found
    }

    /// Why authentication failed, in one line, with the fix.
    fn refusal(&self) -> String {
        if let Some(user) = &self.wrong_user {
            format!(
                "flynn: the SSH user must be `{SSH_USER}` (you connected as `{user}`): use a remote like ssh://{SSH_USER}@<host>:<port>/<app>.git"
            )
        } else if !self.unusable.is_empty() {
            format!("flynn: {}", self.unusable.join("; "))
        } else if !self.unknown_keys.is_empty() {
            format!(
                "flynn: your SSH key is not registered ({}): register it with `flynn key add ~/.ssh/id_ed25519.pub`",
                self.unknown_keys.join(", ")
            )
        } else {
            "flynn: only SSH public keys are accepted: create one with `ssh-keygen -t ed25519` and register it with `flynn key add`".into()
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Refuse unknown keys at the probe, so a client whose agent holds several keys
        // goes on to offer the next one. A registered but unusable key (expired) is
        // accepted here, so that the client proves it holds it before being told why.
        Ok(match self.check(user, offer.public_key) {
            Lookup::Found(_) | Lookup::Unusable(_) => Auth::Accept,
            Lookup::Unknown => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.check(user, key.public_key) {
            Lookup::Found(identity) => {
                self.identity = Some(identity);
                Ok(Auth::Accept)
            }
            Lookup::Unusable(why) => {
                let why = why.to_string();
                let _span = self.span.enter();
                tracing::info!(reason = %why, "registered key refused");
                if !self.unusable.contains(&why) && self.unusable.len() < 8 {
                    self.unusable.push(why);
                }
                Ok(Auth::reject())
            }
            Lookup::Unknown => Ok(Auth::reject()),
        }
    }

    /// Never accepts. A client comes here after all its keys were refused; the
    /// (prompt-less) challenge's instructions are the one place an SSH server can tell an
    /// unauthenticated client why: OpenSSH prints them, then `Permission denied`.
    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if response.is_some() || self.hinted {
            // Once is enough: OpenSSH would retry keyboard-interactive (and print the
            // message) up to three times unless it is taken off the list.
            return Ok(Auth::Reject {
                proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
                partial_success: false,
            });
        }
        self.hinted = true;
        self.shared.metrics.auth_failures.inc();
        let _span = self.span.enter();
        tracing::info!(unknown_keys = ?self.unknown_keys, unusable = ?self.unusable, wrong_user = ?self.wrong_user, "authentication refused");
        Ok(Auth::Partial {
            name: "".into(),
            instructions: self.refusal().into(),
            prompts: Vec::new().into(),
        })
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated.store(true, Ordering::Relaxed);
        if let Some(id) = &self.identity {
            let _span = self.span.enter();
            tracing::info!(user = %id.user, fingerprint = %id.fingerprint, "authenticated");
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(identity) = self.identity.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if self.sessions >= self.shared.settings.max_sessions_per_connection {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.sessions += 1;
        reply.accept().await;
        // The task owns the channel from here on and reads it until it closes: an
        // unread channel would stall the whole connection after 100 messages.
        let shared = self.shared.clone();
        let closed = self.closed.clone();
        tokio::spawn(
            super::channel::serve(channel, identity, shared, closed).instrument(self.span.clone()),
        );
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Accepted even when refused later: the refusal is a message and exit status 1,
        // which git shows; a channel failure would only say "exec request failed".
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // No terminal is ever allocated, but refusing the request would make `ssh -t`
        // close the channel before it hears why: say yes, then refuse the shell or
        // command in one line.
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Only git's protocol version; the channel task validates and uses it.
        if name == "GIT_PROTOCOL" {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}
