//! Firecracker's HTTP/1.1 API on its Unix socket: typed calls, the boot sequence, readiness.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_proto::firecracker::{
    ActionType, BootSource, Drive, FirecrackerVersion, InstanceActionInfo, InstanceInfo, Logger,
    MachineConfiguration, NetworkInterface, Vm, VmState, Vsock,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How often [`wait_for_api`] probes the socket at most: it starts at
/// [`FIRST_POLL`] and doubles up to this.
pub const POLL_TICK: Duration = Duration::from_millis(10);

/// [`wait_for_api`]'s first pause: the socket usually exists by then (the
/// launch waited for it), so the API is a listen() away.
pub const FIRST_POLL: Duration = Duration::from_micros(500);

/// Why one HTTP exchange with Firecracker failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("connecting to the socket")]
    Connect(#[source] io::Error),
    #[error("building the request")]
    Request(#[source] hyper::http::Error),
    #[error("HTTP/1.1 handshake")]
    Handshake(#[source] hyper::Error),
    #[error("sending the request")]
    Send(#[source] hyper::Error),
    #[error("reading the answer")]
    Read(#[source] hyper::Error),
    #[error("Firecracker answered {status}: {fault_message}")]
    Fault { status: u16, fault_message: String },
    #[error("decoding the answer")]
    Decode(#[source] serde_json::Error),
}

/// A failed Firecracker API operation: which one, on which socket and
/// endpoint; the cause (transport error or Firecracker's `fault_message`) is
/// the source.
#[derive(Debug, thiserror::Error)]
pub enum FirecrackerError {
    #[error("setting the machine configuration (PUT {endpoint} on {socket})")]
    PutMachineConfig {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("setting the boot source (PUT {endpoint} on {socket})")]
    PutBootSource {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("attaching a drive (PUT {endpoint} on {socket})")]
    PutDrive {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("attaching a network interface (PUT {endpoint} on {socket})")]
    PutNetworkInterface {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("configuring vsock (PUT {endpoint} on {socket})")]
    PutVsock {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("configuring the logger (PUT {endpoint} on {socket})")]
    PutLogger {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("starting the instance (PUT {endpoint} InstanceStart on {socket})")]
    InstanceStart {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("sending Ctrl+Alt+Del (PUT {endpoint} SendCtrlAltDel on {socket})")]
    SendCtrlAltDel {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("pausing the VM (PATCH {endpoint} on {socket})")]
    Pause {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("resuming the VM (PATCH {endpoint} on {socket})")]
    Resume {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("describing the instance (GET {endpoint} on {socket})")]
    DescribeInstance {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("reading Firecracker's version (GET {endpoint} on {socket})")]
    Version {
        socket: PathBuf,
        endpoint: String,
        #[source]
        source: CallError,
    },
    #[error("waiting for the Firecracker API on {socket}: deadline of {deadline:?} exceeded after {polls} probes")]
    ApiDeadlineExceeded {
        socket: PathBuf,
        deadline: Duration,
        polls: u32,
    },
}

impl FirecrackerError {
    /// The cause of a failed call (`None` for a readiness timeout).
    pub fn call_error(&self) -> Option<&CallError> {
        use FirecrackerError::*;
        match self {
            PutMachineConfig { source, .. }
            | PutBootSource { source, .. }
            | PutDrive { source, .. }
            | PutNetworkInterface { source, .. }
            | PutVsock { source, .. }
            | PutLogger { source, .. }
            | InstanceStart { source, .. }
            | SendCtrlAltDel { source, .. }
            | Pause { source, .. }
            | Resume { source, .. }
            | DescribeInstance { source, .. }
            | Version { source, .. } => Some(source),
            ApiDeadlineExceeded { .. } => None,
        }
    }

    /// Firecracker's `fault_message`, when it refused the call.
    pub fn fault_message(&self) -> Option<&str> {
        match self.call_error()? {
            CallError::Fault { fault_message, .. } => Some(fault_message),
            _ => None,
        }
    }
}

/// Everything `configure_and_start` sends, in boot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    /// Sent first when present, so the boot itself is logged.
    pub logger: Option<Logger>,
    pub machine: MachineConfiguration,
    pub boot_source: BootSource,
    /// The root drive first (`rootfs`), then any others.
    pub drives: Vec<Drive>,
    /// `eth0` first.
    pub network_interfaces: Vec<NetworkInterface>,
    pub vsock: Option<Vsock>,
}

/// A client for one Firecracker API socket. Each call uses its own
/// connection, so a client is cheap and never holds a stale connection.
#[derive(Debug, Clone)]
pub struct FirecrackerClient {
    socket: PathBuf,
}

type Wrap = fn(PathBuf, String, CallError) -> FirecrackerError;

macro_rules! wrap {
    ($variant:ident) => {
        (|socket, endpoint, source| FirecrackerError::$variant {
            socket,
            endpoint,
            source,
        }) as Wrap
    };
}

impl FirecrackerClient {
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        FirecrackerClient {
            socket: socket_path.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn put_machine_config(
        &self,
        cfg: &MachineConfiguration,
    ) -> Result<(), FirecrackerError> {
        self.put("/machine-config".into(), cfg, wrap!(PutMachineConfig))
            .await
    }

    pub async fn put_boot_source(&self, boot: &BootSource) -> Result<(), FirecrackerError> {
        self.put("/boot-source".into(), boot, wrap!(PutBootSource))
            .await
    }

    pub async fn put_drive(&self, drive: &Drive) -> Result<(), FirecrackerError> {
        self.put(
            format!("/drives/{}", drive.drive_id),
            drive,
            wrap!(PutDrive),
        )
        .await
    }

    pub async fn put_network_interface(
        &self,
        nic: &NetworkInterface,
    ) -> Result<(), FirecrackerError> {
        let endpoint = format!("/network-interfaces/{}", nic.iface_id);
        self.put(endpoint, nic, wrap!(PutNetworkInterface)).await
    }

    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<(), FirecrackerError> {
        self.put("/vsock".into(), vsock, wrap!(PutVsock)).await
    }

    pub async fn put_logger(&self, logger: &Logger) -> Result<(), FirecrackerError> {
        self.put("/logger".into(), logger, wrap!(PutLogger)).await
    }

    pub async fn instance_start(&self) -> Result<(), FirecrackerError> {
        let body = InstanceActionInfo {
            action_type: ActionType::InstanceStart,
        };
        self.put("/actions".into(), &body, wrap!(InstanceStart))
            .await
    }

    pub async fn send_ctrl_alt_del(&self) -> Result<(), FirecrackerError> {
        let body = InstanceActionInfo {
            action_type: ActionType::SendCtrlAltDel,
        };
        self.put("/actions".into(), &body, wrap!(SendCtrlAltDel))
            .await
    }

    pub async fn pause(&self) -> Result<(), FirecrackerError> {
        let body = Vm {
            state: VmState::Paused,
        };
        self.send("PATCH", "/vm".into(), Some(&body), wrap!(Pause))
            .await
            .map(drop)
    }

    pub async fn resume(&self) -> Result<(), FirecrackerError> {
        let body = Vm {
            state: VmState::Resumed,
        };
        self.send("PATCH", "/vm".into(), Some(&body), wrap!(Resume))
            .await
            .map(drop)
    }

    pub async fn describe_instance(&self) -> Result<InstanceInfo, FirecrackerError> {
        self.get("/", wrap!(DescribeInstance)).await
    }

    pub async fn version(&self) -> Result<FirecrackerVersion, FirecrackerError> {
        self.get("/version", wrap!(Version)).await
    }

    /// The boot sequence of docs/vm-lifecycle.md: (logger), machine-config,
    /// boot-source, drives, network interfaces, vsock, then `InstanceStart`.
    /// Stops at the first refusal.
    pub async fn configure_and_start(&self, plan: &BootPlan) -> Result<(), FirecrackerError> {
        if let Some(logger) = &plan.logger {
            self.put_logger(logger).await?;
        }
        self.put_machine_config(&plan.machine).await?;
        self.put_boot_source(&plan.boot_source).await?;
        for drive in &plan.drives {
            self.put_drive(drive).await?;
        }
        for nic in &plan.network_interfaces {
            self.put_network_interface(nic).await?;
        }
        if let Some(vsock) = &plan.vsock {
            self.put_vsock(vsock).await?;
        }
        self.instance_start().await
    }

    async fn put<B: Serialize>(
        &self,
        endpoint: String,
        body: &B,
        wrap: Wrap,
    ) -> Result<(), FirecrackerError> {
        self.send("PUT", endpoint, Some(body), wrap).await.map(drop)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        wrap: Wrap,
    ) -> Result<T, FirecrackerError> {
        let raw = self
            .send::<()>("GET", endpoint.to_string(), None, wrap)
            .await?;
        serde_json::from_slice(&raw).map_err(|e| {
            wrap(
                self.socket.clone(),
                endpoint.to_string(),
                CallError::Decode(e),
            )
        })
    }

    async fn send<B: Serialize>(
        &self,
        method: &str,
        endpoint: String,
        body: Option<&B>,
        wrap: Wrap,
    ) -> Result<Bytes, FirecrackerError> {
        match self.exchange(method, &endpoint, body).await {
            Ok(raw) => Ok(raw),
            Err(e) => Err(wrap(self.socket.clone(), endpoint, e)),
        }
    }

    /// One request on a fresh connection; a non-2xx answer becomes
    /// [`CallError::Fault`] with Firecracker's `fault_message`.
    async fn exchange<B: Serialize>(
        &self,
        method: &str,
        endpoint: &str,
        body: Option<&B>,
    ) -> Result<Bytes, CallError> {
        let payload = match body {
            Some(b) => serde_json::to_vec(b).map_err(CallError::Decode)?,
            None => Vec::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(endpoint)
            .header("Host", "localhost")
            .header("Accept", "application/json");
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(payload)))
            .map_err(CallError::Request)?;
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(CallError::Connect)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(CallError::Handshake)?;
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(CallError::Send)?;
        let status = resp.status();
        let raw = resp
            .into_body()
            .collect()
            .await
            .map_err(CallError::Read)?
            .to_bytes();
        drop(sender);
        conn.abort();
        if status.is_success() {
            return Ok(raw);
        }
        let fault: banger_proto::firecracker::Error =
            serde_json::from_slice(&raw).unwrap_or_default();
        Err(CallError::Fault {
            status: status.as_u16(),
            fault_message: fault
                .fault_message
                .unwrap_or_else(|| String::from_utf8_lossy(&raw).into_owned()),
        })
    }
}

/// Poll `GET /` on `socket` until Firecracker answers, at most `deadline`
/// long, the pauses doubling from [`FIRST_POLL`] to [`POLL_TICK`]. Returns as soon as the socket answers (a refusal is returned as
/// is); after the deadline, [`FirecrackerError::ApiDeadlineExceeded`] —
/// always after at least one probe.
pub async fn wait_for_api(
    socket: &Path,
    deadline: Duration,
) -> Result<InstanceInfo, FirecrackerError> {
    let client = FirecrackerClient::new(socket);
    let start = tokio::time::Instant::now();
    let mut polls = 0u32;
    let mut pause = FIRST_POLL;
    loop {
        polls += 1;
        match client.describe_instance().await {
            Ok(info) => return Ok(info),
            Err(e) if e.fault_message().is_some() => return Err(e),
            Err(_) => {}
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Err(FirecrackerError::ApiDeadlineExceeded {
                socket: socket.to_path_buf(),
                deadline,
                polls,
            });
        }
        tokio::time::sleep(pause.min(deadline - elapsed)).await;
        pause = (pause * 2).min(POLL_TICK);
    }
}
