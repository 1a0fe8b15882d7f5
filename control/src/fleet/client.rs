//! The connection to etcd (endpoints, TLS, user and password, from the config's
//! `cluster.etcd`), every call bounded by a timeout and its error given context; and the
//! layout of the fleet's keys under its prefix.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

/// How long a call to etcd may take before it counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection to an endpoint.
    pub connect: Duration,
    /// One request (a get, put or txn; the first answer of a stream).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            request: Duration::from_secs(3),
        }
    }
}

/// What went wrong talking to etcd, said with what serin was doing.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot connect to etcd at {endpoints}: {source}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{what}: etcd did not answer within {}", humantime::format_duration(*.after))]
    Timeout { what: String, after: Duration },
    #[error("{what}: {source}")]
    Etcd {
        what: String,
        #[source]
        source: etcd_client::Error,
    },
    /// Another live instance holds this instance's name.
    #[error("the instance name {instance:?} is taken by a live instance of this fleet ({holder}); give each instance its own `cluster.instance` (two with one name would count their samples twice), or wait up to lease_ttl if that instance just stopped")]
    NameTaken { instance: String, holder: String },
    /// A fenced write found another leader (or none): this instance leads no more.
    #[error(
        "not leader any more: the leader key {key:?} (revision {revision}) is gone or was replaced"
    )]
    NotLeader { key: String, revision: i64 },
    /// The lease is gone (expired or revoked): what was held with it is gone too.
    #[error("the lease {lease:x} has expired or was revoked")]
    LeaseExpired { lease: i64 },
    #[error("{what}: {message}")]
    Unexpected { what: String, message: String },
}

impl FleetError {
    /// Whether the error says this instance is not leader (rather than that etcd could
    /// not be asked).
    pub fn is_not_leader(&self) -> bool {
        matches!(self, FleetError::NotLeader { .. })
    }
}

/// A connection to the fleet's etcd: a client (cheap to clone: one channel), the key
/// layout, and the timeouts every call takes.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    keys: Keys,
    timeouts: Timeouts,
    endpoints: String,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Connects to `settings`' endpoints, authenticates when it has a user, and reads the
    /// prefix once (so an unreachable etcd, a TLS problem or refused credentials are an
    /// error here, not on first use).
    pub async fn connect(
        settings: &serin_config::Etcd,
        timeouts: Timeouts,
    ) -> Result<Etcd, FleetError> {
        let endpoints = settings.endpoints.join(", ");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeouts.connect)
            // HTTP/2 pings find a dead connection (a cut network) without a request.
            .with_keep_alive(timeouts.request, timeouts.request)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &settings.tls {
            let mut config = TlsOptions::new();
            config = match &tls.ca_pem {
                Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
                None => config.with_webpki_roots(),
            };
            if let Some(client) = &tls.client {
                config = config.identity(Identity::from_pem(
                    &client.cert_pem,
                    client.key_pem.expose().as_bytes(),
                ));
            }
            options = options.with_tls(config);
        }
        if let Some(auth) = &settings.auth {
            options = options.with_user(auth.username.clone(), auth.password.expose());
        }
        let connect = Client::connect(&settings.endpoints, Some(options));
        let client = match tokio::time::timeout(timeouts.connect + timeouts.request, connect).await
        {
            Ok(Ok(client)) => client,
            Ok(Err(source)) => return Err(FleetError::Connect { endpoints, source }),
            Err(_) => {
                return Err(FleetError::Timeout {
                    what: format!("connecting to etcd at {endpoints}"),
                    after: timeouts.connect + timeouts.request,
                })
            }
        };
        let etcd = Etcd {
            client,
            keys: Keys::new(&settings.prefix),
            timeouts,
            endpoints,
        };
        let mut kv = etcd.client();
        let prefix = etcd.keys.prefix.clone();
        etcd.call(
            format!("reading {prefix} on etcd at {}", etcd.endpoints),
            kv.get(
                prefix.as_bytes(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ),
        )
        .await?;
        Ok(etcd)
    }

    /// A handle on the client for calls of one's own (wrap them in [`Etcd::call`]).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Runs `call` within the request timeout; `what` says what it was doing, for the
    /// error ("putting /serin/prod/samples/web-1").
    pub async fn call<T>(
        &self,
        what: impl Into<String>,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(self.timeouts.request, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(FleetError::Etcd {
                what: what.into(),
                source,
            }),
            Err(_) => Err(FleetError::Timeout {
                what: what.into(),
                after: self.timeouts.request,
            }),
        }
    }
}

/// The fleet's keys under its prefix `P` (docs/fleet.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Starts and ends with `/`.
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P/members/`: one key per live instance.
    pub fn members(&self) -> String {
        format!("{}members/", self.prefix)
    }

    /// `P/members/<instance>`.
    pub fn member(&self, instance: &str) -> String {
        format!("{}members/{instance}", self.prefix)
    }

    /// `P/election`: the name of etcd's election (its keys are `P/election/<lease>`).
    pub fn election(&self) -> String {
        format!("{}election", self.prefix)
    }

    /// `P/samples/`.
    pub fn samples(&self) -> String {
        format!("{}samples/", self.prefix)
    }

    /// `P/samples/<instance>`.
    pub fn sample(&self, instance: &str) -> String {
        format!("{}samples/{instance}", self.prefix)
    }

    /// `P/state/`.
    pub fn states(&self) -> String {
        format!("{}state/", self.prefix)
    }

    /// `P/state/<service>`.
    pub fn state(&self, service: &str) -> String {
        format!("{}state/{service}", self.prefix)
    }

    /// `P/timeline/<service>/<seq>`, the sequence number zero-padded to 20 digits so
    /// that keys sort as numbers.
    pub fn timeline(&self, service: &str, seq: u64) -> String {
        format!("{}timeline/{service}/{seq:020}", self.prefix)
    }

    /// `P/commands/<service>/`.
    pub fn commands(&self, service: &str) -> String {
        format!("{}commands/{service}/", self.prefix)
    }

    /// `P/weights/`: weights set by hand on services without a rollout.
    pub fn weights(&self) -> String {
        format!("{}weights/", self.prefix)
    }

    /// `P/drill/`: the drills running on the fleet, one per service.
    pub fn drills(&self) -> String {
        format!("{}drill/", self.prefix)
    }

    /// `P/summary`.
    pub fn summary(&self) -> String {
        format!("{}summary", self.prefix)
    }

    /// The part of `key` after `under` (e.g. the instance of a `P/samples/<instance>`).
    pub fn name_under<'k>(key: &'k [u8], under: &str) -> Option<&'k str> {
        std::str::from_utf8(key.strip_prefix(under.as_bytes())?).ok()
    }
}

/// A record the fleet stores as JSON, one per key under its prefix.
pub trait Record: serde::de::DeserializeOwned {
    /// What the key and the record are called in errors (`drill`, `fleet drill`).
    const KEY: &'static str;
    const WHAT: &'static str;
    /// The newest format this serin reads.
    const FORMAT: u32;
    fn format(&self) -> u32;
    /// Whether the record belongs under `name`, the key's name under its prefix.
    fn check_name(&self, name: &str) -> Result<(), String>;
}

/// A record read from `key` under `under`, if it is one of this serin's: JSON of a
/// format it reads, stored under its own name.
pub fn decode_record<T: Record>(under: &str, key: &[u8], value: &[u8]) -> Result<T, String> {
    let name = Keys::name_under(key, under).ok_or_else(|| format!("not a {} key", T::KEY))?;
    let record: T = serde_json::from_slice(value).map_err(|e| format!("not a {}: {e}", T::WHAT))?;
    if record.format() > T::FORMAT {
        return Err(format!(
            "format {} is newer than this serin's {}",
            record.format(),
            T::FORMAT
        ));
    }
    record.check_name(name)?;
    Ok(record)
}

/// [`Record::check_name`] of a record stored under its service's name.
pub fn names_service(service: &str, name: &str) -> Result<(), String> {
    if service == name {
        Ok(())
    } else {
        Err(format!("it names service {service:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn keys_sit_under_the_prefix() {
        let keys = Keys::new("/serin/prod/");
        assert_eq!(keys.member("web-1"), "/serin/prod/members/web-1");
        assert_eq!(keys.election(), "/serin/prod/election");
        assert_eq!(keys.sample("web-1"), "/serin/prod/samples/web-1");
        assert_eq!(keys.state("api"), "/serin/prod/state/api");
        assert_eq!(
            keys.timeline("api", 42),
            "/serin/prod/timeline/api/00000000000000000042"
        );
        assert_eq!(keys.commands("api"), "/serin/prod/commands/api/");
        assert_eq!(keys.summary(), "/serin/prod/summary");
        assert_eq!(
            Keys::name_under(b"/serin/prod/samples/web-1", &keys.samples()),
            Some("web-1")
        );
        assert_eq!(Keys::name_under(b"/other/web-1", &keys.samples()), None);
    }
}
