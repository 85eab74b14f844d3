//! The task frames of one connection: `task_create`, `task_act`, `task_list`, `task_get`,
//! `blob_put`, `task_bundle` (see `docs/PROTOCOL.md`, "Tasks").
//!
//! Who may do what:
//! - Creating, moving and uploading need a registered name: the actor is the name this
//!   connection holds, never a field of the frame.
//! - Reading (`task_list`, `task_get`, `task_bundle`) is for the parties of a task (creator,
//!   addressee, holder; anyone while a task to `any` is unclaimed). A connection that holds
//!   no name (the CLI) reads as a session by presenting the session's id and owner secret —
//!   the name must be owned. The hub operator reads every task when it asks with `all`
//!   (who the operator is: [`crate::operator`]; a party reads its own without `all`).
//! - Anything else is answered `not_found` (a task the asker may not see is not confirmed to
//!   exist) or `forbidden`, and changes nothing.

use data_encoding::BASE64;
use relay_proto::{
    BROADCAST, SessionId,
    id::validate,
    time::{ago, iso, now_ms},
    wire::{
        BlobAck, BlobPut, BundleChunk, ClientFrame, RequestId, ServerFrame, TaskAct, TaskBundle,
        TaskCreate, TaskGet, TaskList, TaskPage, TaskRefused, TaskReply, TaskReserved, codes,
    },
    wire_tasks::{ANY, ActAs, TaskAction, parse_task_id},
};

use super::*;
use crate::{
    auth::secret_matches,
    dispatch::ConnSession,
    router::Router,
    store::{
        CommitSink,
        tasks::{Applied, BlobChunkIn, ListQuery, Move, NewTask, TaskError, TaskStore},
    },
};

/// Handles one task frame (the dispatcher sends every task frame type here).
pub(crate) async fn frame(conn: &mut ConnSession, hub: &HubState, frame: ClientFrame) {
    match frame {
        ClientFrame::TaskCreate(f) => create(conn, hub, f).await,
        ClientFrame::TaskAct(f) => act(conn, hub, f).await,
        ClientFrame::TaskList(f) => list(conn, hub, f).await,
        ClientFrame::TaskGet(f) => get(conn, hub, f).await,
        ClientFrame::BlobPut(f) => blob_put(conn, hub, f).await,
        ClientFrame::TaskBundle(f) => bundle(conn, hub, f).await,
        ClientFrame::TaskReserve(f) => reserve(conn, hub, f.rid).await,
        other => conn.error(codes::BAD_FRAME, "not a task frame", other.rid().cloned()),
    }
}

/// A refusal to send back: (code, message).
type Refuse = (&'static str, String);

fn bad(msg: impl Into<String>) -> Refuse {
    (codes::BAD_FRAME, msg.into())
}

fn too_large(msg: impl Into<String>) -> Refuse {
    (codes::TOO_LARGE, msg.into())
}

/// Runs `f` on the store's task half, on the actor thread.
async fn with_tasks<R: Send + 'static>(
    hub: &HubState,
    f: impl FnOnce(&mut dyn TaskStore) -> Result<R, TaskError> + Send + 'static,
) -> Result<R, TaskError> {
    hub.store
        .call(move |b| match b.tasks() {
            Some(t) => Ok(f(t)),
            None => Ok(Err(TaskError::Invalid(
                "this hub's store keeps no tasks".into(),
            ))),
        })
        .await?
}

fn task_number(id: &str) -> Result<u64, Refuse> {
    parse_task_id(id).ok_or_else(|| bad(format!("{id:?} is not a task id (they look like T-42)")))
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// A single line of at most `max` characters, without control characters.
fn line(field: &str, s: &str, max: usize) -> Result<String, Refuse> {
    let s = s.trim();
    if s.is_empty() {
        return Err(bad(format!("{field} is empty")));
    }
    if chars(s) > max {
        return Err(too_large(format!(
            "{field} is {} characters; the limit is {max}",
            chars(s)
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(format!(
            "{field} must be one line without control characters"
        )));
    }
    Ok(s.to_string())
}

/// Text of at most `max` bytes (newlines allowed; other control characters are not).
fn text(field: &str, s: Option<&str>, max: usize) -> Result<Option<String>, Refuse> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if s.len() > max {
        return Err(too_large(format!(
            "{field} is {} bytes; the limit is {max} — point to a file or commit instead",
            s.len()
        )));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(bad(format!(
            "{field} has control characters (only newlines and tabs are kept)"
        )));
    }
    Ok(Some(s.to_string()))
}

fn validate_create(me: &str, f: &TaskCreate) -> Result<NewTask, Refuse> {
    let to = f.to.trim();
    if to != ANY {
        if to == BROADCAST {
            return Err(bad(
                "to: a task goes to one session, or to \"any\" (the first to claim it)",
            ));
        }
        validate(to).map_err(|e| bad(format!("invalid to {to:?}: {e}")))?;
        if to == me {
            return Err(bad("to: that is you; hand the task to another session"));
        }
    }
    let title = line("title", &f.title, MAX_TITLE_CHARS)?;
    let brief = text("brief", Some(&f.brief), MAX_BRIEF_BYTES)?.unwrap_or_default();
    if f.acceptance.len() > MAX_ACCEPTANCE {
        return Err(too_large(format!(
            "acceptance has {} checks; the limit is {MAX_ACCEPTANCE}",
            f.acceptance.len()
        )));
    }
    let acceptance = f
        .acceptance
        .iter()
        .map(|c| line("an acceptance check", c, MAX_ACCEPTANCE_CHARS))
        .collect::<Result<Vec<_>, _>>()?;
    if f.refs.len() > MAX_REFS {
        return Err(too_large(format!("refs: at most {MAX_REFS} tasks")));
    }
    let refs = f
        .refs
        .iter()
        .map(|r| task_number(r))
        .collect::<Result<Vec<_>, _>>()?;
    let git = match &f.git {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => {
            let s = v.to_string();
            if s.len() > MAX_GIT_BYTES {
                return Err(too_large(format!(
                    "git is {} bytes; the limit is {MAX_GIT_BYTES}",
                    s.len()
                )));
            }
            Some(s)
        }
        Some(_) => return Err(bad("git must be a JSON object")),
    };
    let blob = match &f.blob {
        None => None,
        Some(b) => Some(blob_number(b)?),
    };
    let reserved = f.id.as_deref().map(task_number).transpose()?;
    if let Some(k) = &f.key
        && (k.is_empty() || k.len() > crate::dispatch::MAX_KEY)
    {
        return Err(bad(format!(
            "key must be 1 to {} bytes",
            crate::dispatch::MAX_KEY
        )));
    }
    Ok(NewTask {
        from: me.to_string(),
        to: to.to_string(),
        title,
        brief,
        acceptance,
        refs,
        git,
        blob,
        reserved,
        key: f.key.clone(),
        now: now_ms(),
        max_open: MAX_OPEN_PER_CREATOR,
    })
}

fn blob_number(b: &str) -> Result<u64, Refuse> {
    b.strip_prefix('b')
        .filter(|d| !d.is_empty() && d.len() < 19 && d.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| bad(format!("{b:?} is not a blob id (they look like b7)")))
}

/// Whether the router would hand mail from `from` to `to` to a live connection now.
fn deliverable(router: &std::sync::Arc<Router>) -> impl Fn(&str, &str) -> bool + '_ {
    move |from, to| router.deliverable(from, to)
}

/// Tells the metrics (tasks by state) and the operator feed that `task` was created (`was`
/// None) or moved.
fn observed(
    hub: &HubState,
    task: &crate::store::tasks::TaskRow,
    was: Option<relay_proto::wire_tasks::TaskState>,
    action: &str,
    by: &str,
) {
    hub.metrics.task_moved(was, task.state);
    hub.feed.task(task, action, by);
}

/// Sends an error, or the task error in its own words.
fn task_error(conn: &ConnSession, e: TaskError, rid: Option<RequestId>) {
    match e {
        TaskError::Store(e) => conn.store_error(e, rid),
        TaskError::NotFound(id) => conn.error(codes::NOT_FOUND, format!("no task {id}"), rid),
        TaskError::Invalid(why) => conn.error(codes::BAD_FRAME, why, rid),
        // Moves answer refusals themselves (`task_refused`); elsewhere it is a plain error.
        TaskError::Refused { reason, .. } => conn.error(codes::FORBIDDEN, reason, rid),
    }
}

/// "queued: CC-2 offline since 14:02 UTC (3h ago)", or who sees it now.
async fn notice(hub: &HubState, to: &str) -> String {
    if to == ANY {
        let online = hub.router.online().len().saturating_sub(1);
        return format!(
            "offered to every session ({online} other online now; the rest see it when they \
             connect); the first to claim it holds it"
        );
    }
    if hub.router.is_online(to) {
        return format!("delivered: {to} is online");
    }
    let id = to.to_string();
    let seen = hub.store.call(move |b| b.session(&id)).await;
    match seen {
        Ok(Some(s)) => {
            let at = iso(s.last_seen);
            let hhmm = at.get(11..16).unwrap_or(&at);
            format!(
                "queued: {to} offline since {hhmm} UTC ({} ago); delivered when it connects",
                ago(s.last_seen, now_ms())
            )
        }
        _ => format!(
            "queued: {to} has never connected to this hub; delivered when a session of that \
             name connects"
        ),
    }
}

async fn create(conn: &mut ConnSession, hub: &HubState, f: TaskCreate) {
    let rid = f.rid.clone();
    let Some(me) = conn.registered_id("creating tasks", &rid) else {
        return;
    };
    let new = match validate_create(me.as_str(), &f) {
        Ok(n) => n,
        Err((code, msg)) => return conn.error(code, msg, rid),
    };
    let router = hub.router.clone();
    let created = with_tasks(hub, move |t| t.create_task(&new, &deliverable(&router))).await;
    match created {
        Ok(Applied { task, mail, .. }) => {
            let duplicate = mail.is_none();
            if let Some(m) = &mail {
                route(hub, m);
                observed(hub, &task, None, "create", me.as_str());
            }
            let notice = Some(notice(hub, &task.to).await);
            conn.reply(ServerFrame::Task(TaskReply {
                task: task.view(true),
                notice,
                duplicate,
                rid,
            }));
        }
        Err(e) => task_error(conn, e, rid),
    }
}

fn validate_move(f: &TaskAct) -> Result<(Option<String>, Option<String>), Refuse> {
    let note = text("note", f.note.as_deref(), MAX_NOTE_BYTES)?;
    let result = text("result", f.result.as_deref(), MAX_RESULT_BYTES)?;
    let needs = match f.action {
        TaskAction::Progress => Some("note (what was done)"),
        TaskAction::Ask => Some("note (the question)"),
        TaskAction::Answer => Some("note (the answer)"),
        TaskAction::Fail => Some("note (the reason)"),
        _ => None,
    };
    if let Some(what) = needs
        && note.is_none()
    {
        return Err(bad(format!("{} needs a {what}", f.action.as_str())));
    }
    if f.action == TaskAction::Complete && result.is_none() && note.is_none() {
        return Err(bad("complete needs a result (what was done, where it is)"));
    }
    if result.is_some() && f.action != TaskAction::Complete {
        return Err(bad("result goes with complete; use note for other moves"));
    }
    Ok((note, result))
}

async fn act(conn: &mut ConnSession, hub: &HubState, f: TaskAct) {
    let rid = f.rid.clone();
    let Some(me) = conn.registered_id("moving tasks", &rid) else {
        return;
    };
    let n = match task_number(&f.id) {
        Ok(n) => n,
        Err((code, msg)) => return conn.error(code, msg, rid),
    };
    let (note, result) = match validate_move(&f) {
        Ok(v) => v,
        Err((code, msg)) => return conn.error(code, msg, rid),
    };
    let mv = Move {
        actor: me.to_string(),
        n,
        action: f.action,
        note,
        result,
        now: now_ms(),
    };
    let router = hub.router.clone();
    let moved = with_tasks(hub, move |t| t.move_task(&mv, &deliverable(&router))).await;
    match moved {
        Ok(Applied { task, mail, was }) => {
            if let Some(m) = &mail {
                route(hub, m);
            }
            observed(hub, &task, was, f.action.as_str(), me.as_str());
            conn.reply(ServerFrame::Task(TaskReply {
                task: task.view(true),
                notice: None,
                duplicate: false,
                rid,
            }));
        }
        Err(TaskError::Refused { reason, task }) => {
            let visible = task.visible_to(me.as_str());
            conn.reply(ServerFrame::TaskRefused(TaskRefused {
                id: task.id(),
                action: f.action,
                reason,
                task: visible.then(|| task.view(false)),
                rid,
            }))
        }
        Err(e) => task_error(conn, e, rid),
    }
}

/// Who is asking to read: the name this connection holds, else a session whose owner
/// secret it presents.
pub(crate) async fn reader(
    conn: &ConnSession,
    hub: &HubState,
    act_as: &ActAs,
) -> Result<SessionId, Refuse> {
    if let Some(me) = &conn.id {
        return match &act_as.client_id {
            Some(other) if other != me.as_str() => Err((
                codes::FORBIDDEN,
                format!("this connection holds {me}; it cannot read as {other}"),
            )),
            _ => Ok(me.clone()),
        };
    }
    let Some(raw) = &act_as.client_id else {
        return Err((
            codes::NOT_REGISTERED,
            "register first, or name the session (clientId) with its owner secret".into(),
        ));
    };
    let id =
        SessionId::parse(raw).map_err(|e| (codes::INVALID_ID, format!("invalid clientId: {e}")))?;
    let secret = act_as.owner_secret.clone().unwrap_or_default();
    let name = id.clone();
    let owned = hub
        .store
        .call(move |b| b.owner_hash(name.as_str()))
        .await
        .map_err(|e| (codes::UNAVAILABLE, format!("hub store unavailable: {e}")))?;
    match owned {
        Some(h) if secret_matches(&h, &secret) => Ok(id),
        Some(_) => Err((
            codes::NOT_OWNER,
            format!("wrong or missing owner secret for {id}"),
        )),
        None => Err((
            codes::NOT_OWNER,
            format!(
                "{id} is not an owned name, so no connection can prove it is {id} without \
                 holding it; read its tasks through its bridge"
            ),
        )),
    }
}

/// Refuses (after answering) a connection asking for the every-session view without being
/// the hub's operator.
fn operator_only(conn: &ConnSession, rid: &Option<RequestId>) -> bool {
    match conn.operator {
        Ok(_) => true,
        Err(denied) => {
            conn.error(
                codes::FORBIDDEN,
                format!(
                    "the every-session view (all) is the hub operator's: {}",
                    denied.why()
                ),
                rid.clone(),
            );
            false
        }
    }
}

async fn list(conn: &mut ConnSession, hub: &HubState, f: TaskList) {
    let rid = f.rid.clone();
    let viewer = if f.all {
        if !operator_only(conn, &rid) {
            return;
        }
        None
    } else {
        match reader(conn, hub, &f.act_as).await {
            Ok(id) => Some(id.to_string()),
            Err((code, msg)) => return conn.error(code, msg, rid),
        }
    };
    let before = match f.before.as_deref().map(task_number).transpose() {
        Ok(b) => b,
        Err((code, msg)) => return conn.error(code, msg, rid),
    };
    let q = ListQuery {
        viewer,
        state: f.state,
        before,
        count: match f.count {
            None | Some(0) => DEFAULT_LIST,
            Some(n) => (n as usize).min(MAX_LIST),
        },
    };
    match with_tasks(hub, move |t| Ok(t.list_tasks(&q)?)).await {
        Ok((rows, more)) => conn.reply(ServerFrame::Tasks(TaskPage {
            tasks: rows.iter().map(|r| r.view(false)).collect(),
            more,
            rid,
        })),
        Err(e) => task_error(conn, e, rid),
    }
}

/// The task if `viewer` may read it (or the operator asks); `not_found` otherwise.
async fn readable(
    hub: &HubState,
    n: u64,
    viewer: Option<&SessionId>,
) -> Result<crate::store::tasks::TaskRow, TaskError> {
    let row = with_tasks(hub, move |t| Ok(t.task(n)?)).await?;
    match row {
        Some(r) if viewer.is_none_or(|v| r.visible_to(v.as_str())) => Ok(r),
        _ => Err(TaskError::NotFound(format!(
            "{} (or not one you are party to)",
            relay_proto::wire_tasks::task_id(n)
        ))),
    }
}

async fn get(conn: &mut ConnSession, hub: &HubState, f: TaskGet) {
    let rid = f.rid.clone();
    let n = match task_number(&f.id) {
        Ok(n) => n,
        Err((code, msg)) => return conn.error(code, msg, rid),
    };
    let viewer = if f.all {
        if !operator_only(conn, &rid) {
            return;
        }
        None
    } else {
        match reader(conn, hub, &f.act_as).await {
            Ok(id) => Some(id),
            Err((code, msg)) => return conn.error(code, msg, rid),
        }
    };
    let row = match readable(hub, n, viewer.as_ref()).await {
        Ok(r) => r,
        Err(e) => return task_error(conn, e, rid),
    };
    let limit = match f.history {
        None => DEFAULT_HISTORY,
        Some(h) => (h as usize).min(MAX_HISTORY),
    };
    match with_tasks(hub, move |t| Ok(t.task_events(n, limit)?)).await {
        Ok((events, omitted)) => {
            let mut task = row.view(true);
            task.history = Some(events);
            task.history_omitted = (omitted > 0).then_some(omitted);
            conn.reply(ServerFrame::Task(TaskReply {
                task,
                notice: None,
                duplicate: false,
                rid,
            }))
        }
        Err(e) => task_error(conn, e, rid),
    }
}

async fn reserve(conn: &mut ConnSession, hub: &HubState, rid: Option<RequestId>) {
    let Some(me) = conn.registered_id("reserving task ids", &rid) else {
        return;
    };
    let now = now_ms();
    match with_tasks(hub, move |t| {
        t.reserve_task(me.as_str(), now, RESERVED_PER_SESSION, RESERVATION_TTL_MS)
    })
    .await
    {
        Ok(n) => conn.reply(ServerFrame::TaskReserved(TaskReserved {
            id: relay_proto::wire_tasks::task_id(n),
            rid,
        })),
        Err(e) => task_error(conn, e, rid),
    }
}

async fn blob_put(conn: &mut ConnSession, hub: &HubState, f: BlobPut) {
    let rid = f.rid.clone();
    let Some(me) = conn.registered_id("uploading", &rid) else {
        return;
    };
    let blob = match f.blob.as_deref().map(blob_number).transpose() {
        Ok(b) => b,
        Err((code, msg)) => return conn.error(code, msg, rid),
    };
    if f.data.len() > MAX_CHUNK_BYTES / 3 * 4 + 4 {
        return conn.error(
            codes::TOO_LARGE,
            format!("a chunk carries at most {MAX_CHUNK_BYTES} bytes"),
            rid,
        );
    }
    let data = match BASE64.decode(f.data.as_bytes()) {
        Ok(d) => d,
        Err(e) => return conn.error(codes::BAD_FRAME, format!("data is not base64: {e}"), rid),
    };
    if f.last && f.sha256.is_none() {
        return conn.error(codes::BAD_FRAME, "the last chunk needs sha256", rid);
    }
    let chunk = BlobChunkIn {
        owner: me.to_string(),
        blob,
        offset: f.offset,
        data,
        size: f.size,
        last: f.last,
        sha256: f.sha256,
        now: now_ms(),
    };
    let limits = hub.tasks.blobs;
    match with_tasks(hub, move |t| t.put_blob_chunk(&chunk, &limits)).await {
        Ok(s) => conn.reply(ServerFrame::Blob(BlobAck {
            blob: format!("b{}", s.blob),
            received: s.received,
            accepted: s.accepted,
            complete: s.complete,
            rid,
        })),
        Err(e) => task_error(conn, e, rid),
    }
}

async fn bundle(conn: &mut ConnSession, hub: &HubState, f: TaskBundle) {
    let rid = f.rid.clone();
    let n = match task_number(&f.id) {
        Ok(n) => n,
        Err((code, msg)) => return conn.error(code, msg, rid),
    };
    let viewer = match reader(conn, hub, &f.act_as).await {
        Ok(id) => id,
        Err((code, msg)) => return conn.error(code, msg, rid),
    };
    if let Err(e) = readable(hub, n, Some(&viewer)).await {
        return task_error(conn, e, rid);
    }
    let offset = f.offset;
    match with_tasks(hub, move |t| {
        Ok(t.bundle_piece(n, offset, BUNDLE_PIECE_BYTES)?)
    })
    .await
    {
        Ok(Some(p)) => conn.reply(ServerFrame::Bundle(BundleChunk {
            id: relay_proto::wire_tasks::task_id(n),
            offset,
            data: BASE64.encode(&p.data),
            total: p.total,
            sha256: p.sha256,
            rid,
        })),
        Ok(None) => conn.error(
            codes::NOT_FOUND,
            format!(
                "{} has no bundle (none was attached, or it expired a week after the task \
                 finished)",
                relay_proto::wire_tasks::task_id(n)
            ),
            rid,
        ),
        Err(e) => task_error(conn, e, rid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(to: &str, title: &str) -> TaskCreate {
        TaskCreate {
            to: to.into(),
            title: title.into(),
            brief: "do it".into(),
            ..Default::default()
        }
    }

    #[test]
    fn creation_is_validated_with_reasons() {
        assert!(validate_create("CC-1", &create("CC-2", "Fix it")).is_ok());
        assert!(validate_create("CC-1", &create("any", "Fix it")).is_ok());
        let why = |f: TaskCreate| validate_create("CC-1", &f).unwrap_err().1;
        assert!(why(create("CC-1", "x")).contains("that is you"));
        assert!(why(create("all", "x")).contains("\"any\""));
        assert!(why(create("9x", "x")).contains("invalid to"));
        assert!(why(create("CC-2", "  ")).contains("title is empty"));
        assert!(why(create("CC-2", "a\nb")).contains("one line"));
        assert!(why(create("CC-2", &"t".repeat(201))).contains("limit is 200"));
        let mut f = create("CC-2", "x");
        f.brief = "b".repeat(MAX_BRIEF_BYTES + 1);
        assert!(why(f).contains("point to a file"));
        let mut f = create("CC-2", "x");
        f.git = Some(serde_json::json!([1]));
        assert!(why(f).contains("JSON object"));
        let mut f = create("CC-2", "x");
        f.refs = vec!["T-x".into()];
        assert!(why(f).contains("not a task id"));
        let mut f = create("CC-2", "x");
        f.blob = Some("7".into());
        assert!(why(f).contains("not a blob id"));
    }

    #[test]
    fn moves_need_what_they_carry() {
        let act = |action, note: Option<&str>, result: Option<&str>| TaskAct {
            id: "T-1".into(),
            action,
            note: note.map(str::to_string),
            result: result.map(str::to_string),
            rid: None,
        };
        assert!(validate_move(&act(TaskAction::Claim, None, None)).is_ok());
        assert!(
            validate_move(&act(TaskAction::Ask, None, None))
                .unwrap_err()
                .1
                .contains("question")
        );
        assert!(
            validate_move(&act(TaskAction::Fail, Some(" "), None))
                .unwrap_err()
                .1
                .contains("reason")
        );
        assert!(
            validate_move(&act(TaskAction::Complete, None, None))
                .unwrap_err()
                .1
                .contains("result")
        );
        assert!(validate_move(&act(TaskAction::Complete, None, Some("done"))).is_ok());
        assert!(validate_move(&act(TaskAction::Progress, Some("x"), Some("y"))).is_err());
        assert!(validate_move(&act(TaskAction::Progress, Some("a\u{7}b"), None)).is_err());
    }
}
