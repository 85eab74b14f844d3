//! Uploading a git bundle to the hub in chunks (`blob_put`), resuming after a lost
//! connection, so `task_create` can attach it whole (see `docs/PROTOCOL.md`, "Tasks").
//!
//! Each chunk is [`CHUNK_BYTES`] of data (its base64 fits a frame with room to spare). The
//! hub answers every chunk with how many bytes it has; after a lost connection the next
//! chunk goes to the same blob, and a chunk at the wrong offset is answered with the right
//! one, so nothing is sent twice into the blob and nothing is skipped. The last chunk
//! carries the SHA-256 of the whole bundle, which the hub checks before the blob can be
//! attached. Bounded: at most [`MAX_RETRIES`] lost requests in a row.

use std::time::Duration;

use data_encoding::BASE64;
use sessions::wire::{BlobPut, ClientFrame, ServerFrame};
use sha2::{Digest, Sha256};

use crate::hub_client::HubClient;

/// Bytes of bundle per `blob_put`.
pub const CHUNK_BYTES: usize = 192 << 10;
/// Lost requests in a row before the upload gives up.
pub const MAX_RETRIES: u32 = 5;
/// How long to wait for a reconnect after a lost request.
const RECONNECT_WAIT: Duration = Duration::from_secs(10);

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Uploads `bytes` and returns the blob id to attach. The error is a sentence for the model.
pub async fn upload(hub: &HubClient, bytes: &[u8]) -> Result<String, String> {
    let sha = sha256_hex(bytes);
    let total = bytes.len() as u64;
    let mut blob: Option<String> = None;
    let mut offset = 0u64;
    let mut lost = 0;
    loop {
        let start = offset as usize;
        let end = (start + CHUNK_BYTES).min(bytes.len());
        let last = end == bytes.len();
        let frame = ClientFrame::BlobPut(BlobPut {
            blob: blob.clone(),
            offset,
            data: BASE64.encode(&bytes[start..end]),
            size: blob.is_none().then_some(total),
            last,
            sha256: last.then(|| sha.clone()),
            rid: None,
        });
        match hub.request(frame).await {
            Ok(ServerFrame::Blob(ack)) => {
                lost = 0;
                if ack.complete {
                    return Ok(ack.blob);
                }
                blob = Some(ack.blob);
                if ack.received > total {
                    return Err("the hub holds more of the bundle than was sent".into());
                }
                offset = ack.received;
            }
            Ok(ServerFrame::Error(e)) => return Err(e.message),
            Ok(other) => {
                return Err(format!(
                    "unexpected reply to blob_put: {}",
                    crate::actions::frame_type(&other)
                ));
            }
            Err(e) if lost < MAX_RETRIES => {
                lost += 1;
                tracing::info!("bundle upload: {e}; resuming at byte {offset}");
                if !hub.wait_connected(RECONNECT_WAIT).await {
                    return Err(format!("the connection to the hub was lost ({e})"));
                }
                // The same chunk again: the hub answers with its offset if it took it.
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
