//! Image records (schema v5, decision 0019): tables `images` and `image_names`, read
//! and written for the image store through [`HomeRecords`]; the boxes pinned to an
//! image (their config's `$.settings.image.manifest`) asked inside the same transaction
//! as a removal. A row that does not decode is reported with its id, never fatal.

use std::collections::{HashMap, HashSet};

use boxsock_image::index::{Change, RecordList, Records};
use boxsock_image::{BadRecord, Digest, ImageError, ImageRecord, LayerRecord};
use rusqlite::types::Value;
use rusqlite::{Connection, TransactionBehavior, params};

use super::{Store, StoreError};

/// The image store's records kept in a home's SQLite store: what
/// [`Runtime::images`](crate::Runtime::images) opens the image store with.
#[derive(Debug, Clone)]
pub struct HomeRecords(Holder);

#[derive(Debug, Clone)]
enum Holder {
    Runtime(crate::Runtime),
    Store(std::sync::Arc<Store>),
}

impl HomeRecords {
    /// The records of a runtime's store.
    pub(crate) fn of_runtime(rt: crate::Runtime) -> HomeRecords {
        HomeRecords(Holder::Runtime(rt))
    }

    /// The records of a store opened on its own (tools, tests).
    pub fn of_store(store: std::sync::Arc<Store>) -> HomeRecords {
        HomeRecords(Holder::Store(store))
    }

    fn store(&self) -> &Store {
        match &self.0 {
            Holder::Runtime(rt) => rt.store(),
            Holder::Store(s) => s,
        }
    }
}

impl Records for HomeRecords {
    fn read(&self) -> boxsock_image::Result<RecordList> {
        self.store().images().map_err(records_error)
    }

    fn update(&self, change: Change<'_>) -> boxsock_image::Result<()> {
        self.store().update_images(change)
    }

    fn pinned(&self) -> boxsock_image::Result<HashSet<String>> {
        self.store().image_pins().map_err(records_error)
    }
}

fn records_error(e: StoreError) -> ImageError {
    ImageError::Records(e.to_string())
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::Text(t) => Some(t),
        _ => None,
    }
}

/// One `images` row as read, every column as SQLite holds it.
struct RawImage {
    id: Value,
    config: Value,
    layers: Value,
    platform: Value,
    size: Value,
    added_at: Value,
}

impl RawImage {
    fn id_text(&self) -> String {
        match &self.id {
            Value::Text(t) => boxsock_core::echo::echo(t).to_string(),
            other => format!("{other:?}"),
        }
    }

    fn decode(&self, names: Vec<String>) -> Result<ImageRecord, String> {
        let digest = |v: &Value, what: &str| -> Result<Digest, String> {
            text(v)
                .ok_or_else(|| format!("{what} is not text"))?
                .parse::<Digest>()
                .map_err(|e| format!("{what}: {e}"))
        };
        let id = digest(&self.id, "id")?;
        let config = digest(&self.config, "config")?;
        let layers: Vec<LayerRecord> =
            serde_json::from_str(text(&self.layers).ok_or("layers are not text")?)
                .map_err(|e| format!("layers: {}", boxsock_core::echo::echo(&e.to_string())))?;
        let platform = text(&self.platform).ok_or("platform is not text")?.to_owned();
        let Value::Integer(size) = self.size else { return Err("size is not an integer".into()) };
        if size != layers.iter().map(|l| l.size as i64).sum::<i64>() {
            return Err(format!("size {size} is not the sum of its layers' sizes"));
        }
        let Value::Integer(added) = self.added_at else {
            return Err("added_at is not an integer".into());
        };
        let added = u64::try_from(added).map_err(|_| format!("added_at {added} is negative"))?;
        Ok(ImageRecord { id, names, config, layers, platform, added })
    }

    /// Every column's text, for the digests a bad row mentions.
    fn all_text(&self) -> String {
        [&self.id, &self.config, &self.layers]
            .iter()
            .filter_map(|v| text(v))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Read every image row and its names on `conn`.
fn read_rows(conn: &Connection) -> rusqlite::Result<(RecordList, Vec<String>)> {
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    let mut stmt =
        conn.prepare("SELECT name, image_id FROM image_names ORDER BY image_id, position")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, Value>(0)?, r.get::<_, Value>(1)?)))?;
    for row in rows {
        let (name, image) = row?;
        if let (Value::Text(name), Value::Text(image)) = (name, image) {
            names.entry(image).or_default().push(name);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT id, config, layers, platform, size, added_at FROM images ORDER BY added_at, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RawImage {
            id: r.get(0)?,
            config: r.get(1)?,
            layers: r.get(2)?,
            platform: r.get(3)?,
            size: r.get(4)?,
            added_at: r.get(5)?,
        })
    })?;
    let mut out = RecordList::default();
    let mut bad_text = Vec::new();
    for row in rows {
        let raw = row?;
        let own = text(&raw.id).and_then(|id| names.remove(id)).unwrap_or_default();
        match raw.decode(own) {
            Ok(rec) => out.images.push(rec),
            Err(error) => {
                let id = raw.id_text();
                tracing::warn!(image = %id, error = %error, "skipping corrupt image row");
                out.bad.push(BadRecord { id, error });
                bad_text.push(raw.all_text());
            }
        }
    }
    Ok((out, bad_text))
}

/// Every run of exactly 64 lower-case hex digits in `s` (a sha256 digest's hex).
fn hex_runs(s: &str, into: &mut HashSet<String>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && matches!(b[i], b'0'..=b'9' | b'a'..=b'f') {
            i += 1;
        }
        if i - start == 64 {
            into.insert(s[start..i].to_owned());
        }
        i = i.max(start + 1);
    }
}

fn strip(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

impl Store {
    /// Every image record (schema v5); rows that do not decode are reported apart.
    pub fn images(&self) -> Result<RecordList, StoreError> {
        let conn = self.conn();
        read_rows(&conn).map(|(l, _)| l).map_err(self.sq("list images"))
    }

    /// Read the good image records, let `change` edit them and write what changed,
    /// in one immediate transaction; `change` may ask which boxes are pinned to an
    /// image inside it, so no box can be created on an image between that check and
    /// the removal. Bad rows are left as they are (a name moved from one keeps moving).
    pub fn update_images(&self, change: Change<'_>) -> boxsock_image::Result<()> {
        let mut conn = self.conn();
        let e = |op| {
            let path = self.path.clone();
            move |source| ImageError::Records(StoreError::Sqlite { path, op, source }.to_string())
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e("begin image update"))?;
        let (list, _) = read_rows(&tx).map_err(e("read images"))?;
        let before: HashMap<Digest, ImageRecord> =
            list.images.iter().map(|i| (i.id.clone(), i.clone())).collect();
        let mut images = list.images;
        {
            let users = |id: &Digest| -> boxsock_image::Result<Vec<String>> {
                boxes_pinned_to(&tx, id).map_err(e("find the boxes of an image"))
            };
            change(&mut images, &users)?;
        }
        let after: HashSet<&Digest> = images.iter().map(|i| &i.id).collect();
        for id in before.keys().filter(|id| !after.contains(id)) {
            tx.execute("DELETE FROM images WHERE id = ?1", [id.to_string()])
                .map_err(e("delete image"))?;
        }
        let changed: Vec<&ImageRecord> =
            images.iter().filter(|i| before.get(&i.id) != Some(*i)).collect();
        for i in &changed {
            tx.execute("DELETE FROM image_names WHERE image_id = ?1", [i.id.to_string()])
                .map_err(e("rename image"))?;
        }
        for i in &changed {
            let layers = serde_json::to_string(&i.layers).expect("layers serialise");
            tx.execute(
                "INSERT INTO images (id, config, layers, platform, size, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET config = ?2, layers = ?3, platform = ?4,
                     size = ?5, added_at = ?6",
                params![
                    i.id.to_string(),
                    i.config.to_string(),
                    layers,
                    i.platform,
                    i.size() as i64,
                    i.added as i64
                ],
            )
            .map_err(e("write image"))?;
            for (pos, name) in i.names.iter().enumerate() {
                // OR REPLACE: a name moves to the image written last, from a bad row too.
                tx.execute(
                    "INSERT OR REPLACE INTO image_names (name, image_id, position)
                     VALUES (?1, ?2, ?3)",
                    params![name, i.id.to_string(), pos as i64],
                )
                .map_err(e("name image"))?;
            }
        }
        tx.commit().map_err(e("commit image update"))
    }

    /// The hex digests boxes are pinned to (manifests and layer diff ids from their
    /// configs; every sha256 hex a corrupt box config mentions) and those a corrupt
    /// image row mentions: what `prune` must keep.
    pub fn image_pins(&self) -> Result<HashSet<String>, StoreError> {
        let conn = self.conn();
        let mut keep = HashSet::new();
        let mut stmt = conn.prepare("SELECT config FROM boxes").map_err(self.sq("read pins"))?;
        let rows = stmt.query_map([], |r| r.get::<_, Value>(0)).map_err(self.sq("read pins"))?;
        for row in rows {
            let raw = match row.map_err(self.sq("read pins"))? {
                Value::Text(t) => t,
                Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
                _ => continue,
            };
            match serde_json::from_str::<serde_json::Value>(&raw) {
                Ok(v) => {
                    let image = &v["settings"]["image"];
                    if let Some(m) = image["manifest"].as_str() {
                        keep.insert(strip(m).to_owned());
                    }
                    for l in image["layers"].as_array().into_iter().flatten() {
                        if let Some(l) = l.as_str() {
                            keep.insert(strip(l).to_owned());
                        }
                    }
                }
                // Which image a corrupt row pins cannot be known: keep all it mentions.
                Err(_) => hex_runs(&raw, &mut keep),
            }
        }
        drop(stmt);
        let (_, bad) = read_rows(&conn).map_err(self.sq("list images"))?;
        for t in bad {
            hex_runs(&t, &mut keep);
        }
        Ok(keep)
    }
}

/// The boxes (names, else ids) whose config pins `image`; a config that is not JSON
/// counts when it mentions the digest.
fn boxes_pinned_to(conn: &Connection, image: &Digest) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT id, name FROM boxes WHERE CASE WHEN json_valid(config)
             THEN json_extract(config, '$.settings.image.manifest') = ?1
             ELSE instr(CAST(config AS TEXT), ?2) > 0 END
         ORDER BY created_at_ms, id",
    )?;
    let rows = stmt.query_map(params![image.to_string(), image.hex()], |r| {
        Ok((r.get::<_, Value>(0)?, r.get::<_, Option<String>>(1).ok().flatten()))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name) = row?;
        out.push(name.unwrap_or_else(|| match id {
            Value::Text(t) => t,
            other => format!("{other:?}"),
        }));
    }
    Ok(out)
}
