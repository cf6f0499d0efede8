//! The Nix database of an image: `/nix/var/nix/db/db.sqlite` registering every store path of
//! the closure, so the nix inside the image sees a valid store.
//!
//! The file is written with SQLite itself (the bundled library, so every machine writes the
//! same version's format), with the schema of Nix's local store version 10 (Nix 2.0 to 2.x,
//! Debian bookworm's `nix-bin` 2.8 among them). SQLite's output depends only on the statements
//! run, so the bytes are made reproducible by fixing everything that would vary: rows are
//! inserted in store path order in one transaction, the registration time is a constant, the
//! page size and the journal mode are set, and the file is written in a fresh directory of its
//! own.

use std::path::Path;

use base64::Engine;
use rusqlite::{Connection, params};
use strata_fstree::{Entry, ImagePath};

use crate::{NixError, PathInfo};

/// `/etc/nix/nix.conf` of an image with a database, unless other content brings one: the
/// container runs Nix as one user (no `nixbld` build users, which root would otherwise need)
/// and is itself the isolation (Nix's build sandbox needs namespaces a container rarely
/// grants).
pub const NIX_CONF: &str = "# Written by strata for `nix = { database = true }`: single-user Nix in a container.\n\
                            build-users-group =\n\
                            sandbox = false\n";

/// The state directory of the image's Nix.
const STATE: &str = "nix/var/nix";

/// The local store schema version the database has (Nix's `nixSchemaVersion`), written to
/// `/nix/var/nix/db/schema`.
pub const SCHEMA_VERSION: &str = "10";

/// The registration time of every path (one second after the epoch): the time a path was
/// registered is the one thing the host's database has that the image's must not copy.
pub const REGISTRATION_TIME: i64 = 1;

/// Nix's `schema.sql` for schema version 10, statement for statement as Nix runs it when it
/// creates a store (the `ca-derivations` tables are only made when that experimental feature
/// is enabled, so they are not here).
const SCHEMA: &str = r#"create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer, -- null implies "false"
    sigs             text, -- space-separated
    ca               text -- if not null, an assertion that the path is content-addressed; see ValidPathInfo
);

create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);

create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);

-- Paths can refer to themselves, causing a tuple (N, N) in the Refs
-- table.  This causes a deletion of the corresponding row in
-- ValidPaths to cause a foreign key constraint violation (due to `on
-- delete restrict' on the `reference' column).  Therefore, explicitly
-- get rid of self-references.
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;

create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null, -- symbolic output id, usually "out"
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);

create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
"#;

/// The files that make the closure a valid store to the nix inside the image: the database and
/// its schema version, the state directories Nix expects, GC roots for the requested outputs
/// (`/nix/var/nix/gcroots/strata/<name>`, so `nix-store --gc` keeps the closure wherever the
/// profile is), and the `nix.conf`. The store directory and the state belong to `owner`
/// (`uid`, `gid`), the account that runs Nix.
pub fn entries(
    infos: &[PathInfo],
    roots: &[String],
    owner: (u32, u32),
    scratch: &Path,
) -> Result<Vec<Entry>, NixError> {
    let bytes = database(infos, scratch)?;
    let own = |mut e: Entry| {
        (e.uid, e.gid) = owner;
        e
    };
    let at = |rel: &str| image_path(&format!("{STATE}/{rel}"));
    let mut out = vec![
        own(Entry::directory(image_path("nix/store"), 0o755)),
        own(Entry::directory(image_path("nix/var"), 0o755)),
        own(Entry::directory(image_path(STATE), 0o755)),
        own(Entry::directory(at("db"), 0o755)),
        own(Entry::inline_file(at("db/db.sqlite"), 0o644, bytes)),
        own(Entry::inline_file(
            at("db/schema"),
            0o644,
            SCHEMA_VERSION.as_bytes().to_vec(),
        )),
        own(Entry::directory(at("profiles"), 0o755)),
        own(Entry::directory(at("temproots"), 0o755)),
        own(Entry::directory(at("gcroots"), 0o755)),
        // What Nix makes when it creates `gcroots` itself.
        own(Entry::symlink(
            at("gcroots/profiles"),
            format!("/{STATE}/profiles"),
        )),
        own(Entry::directory(at("gcroots/strata"), 0o755)),
    ];
    for root in roots {
        let name = root
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(root);
        if let Ok(link) = ImagePath::new(&format!("{STATE}/gcroots/strata/{name}")) {
            out.push(own(Entry::symlink(link, root.clone())));
        }
    }
    out.push(Entry::directory(image_path("etc/nix"), 0o755));
    out.push(Entry::inline_file(
        image_path("etc/nix/nix.conf"),
        0o644,
        NIX_CONF.as_bytes().to_vec(),
    ));
    Ok(out)
}

/// A path known to be valid.
fn image_path(p: &str) -> ImagePath {
    ImagePath::new(p).unwrap_or_else(|_| unreachable!("`{p}` is a valid image path"))
}

/// The bytes of a Nix database registering `infos` (a closure: every reference is among them).
///
/// `scratch` is an empty directory the file is written in (SQLite needs a file to write).
pub fn database(infos: &[PathInfo], scratch: &Path) -> Result<Vec<u8>, NixError> {
    let mut sorted: Vec<&PathInfo> = infos.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    sorted.dedup_by(|a, b| a.path == b.path);
    let ids: std::collections::BTreeMap<&str, i64> = sorted
        .iter()
        .zip(1..)
        .map(|(info, id)| (info.path.as_str(), id))
        .collect();
    let file = scratch.join("db.sqlite");
    let sql_err = |source: rusqlite::Error| NixError::Database {
        path: file.clone(),
        source: Box::new(source),
    };
    {
        let mut conn = Connection::open(&file).map_err(sql_err)?;
        // Nix creates its databases with 4096-byte pages; it switches the journal to WAL
        // itself when it opens the file, so the image keeps the plain rollback journal.
        conn.execute_batch(
            "PRAGMA page_size = 4096; PRAGMA journal_mode = DELETE; PRAGMA foreign_keys = ON;",
        )
        .map_err(sql_err)?;
        let tx = conn.transaction().map_err(sql_err)?;
        tx.execute_batch(SCHEMA).map_err(sql_err)?;
        {
            let mut path_row = tx
                .prepare(
                    "insert into ValidPaths (id, path, hash, registrationTime, deriver, narSize, \
                     ultimate, sigs, ca) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .map_err(sql_err)?;
            for info in &sorted {
                let hash = base16_hash(&info.nar_hash)
                    .ok_or_else(|| NixError::BadHash(info.path.clone(), info.nar_hash.clone()))?;
                let sigs = (!info.signatures.is_empty()).then(|| info.signatures.join(" "));
                path_row
                    .execute(params![
                        ids[info.path.as_str()],
                        info.path,
                        hash,
                        REGISTRATION_TIME,
                        info.deriver,
                        (info.nar_size != 0).then_some(info.nar_size as i64),
                        info.ultimate.then_some(1),
                        sigs,
                        info.ca,
                    ])
                    .map_err(sql_err)?;
            }
            let mut ref_row = tx
                .prepare("insert into Refs (referrer, reference) values (?, ?)")
                .map_err(sql_err)?;
            for info in &sorted {
                let mut refs: Vec<i64> = Vec::with_capacity(info.references.len());
                for r in &info.references {
                    let id = ids.get(r.as_str()).ok_or_else(|| NixError::NotInClosure {
                        path: info.path.clone(),
                        reference: r.clone(),
                    })?;
                    refs.push(*id);
                }
                refs.sort_unstable();
                refs.dedup();
                for r in refs {
                    ref_row
                        .execute(params![ids[info.path.as_str()], r])
                        .map_err(sql_err)?;
                }
            }
        }
        tx.commit().map_err(sql_err)?;
        conn.close().map_err(|(_, e)| sql_err(e))?;
    }
    std::fs::read(&file).map_err(|source| NixError::Database {
        path: file.clone(),
        source: Box::new(source),
    })
}

/// `sha256:<base16>` (the form the database keeps) of a NAR hash as `nix path-info --json`
/// prints it: SRI (`sha256-<base64>`, Nix 2.4 and later) or `sha256:` with Nix's base32 or
/// base16.
pub fn base16_hash(hash: &str) -> Option<String> {
    let bytes = if let Some(b64) = hash.strip_prefix("sha256-") {
        base64::engine::general_purpose::STANDARD.decode(b64).ok()?
    } else {
        let digits = hash.strip_prefix("sha256:")?;
        match digits.len() {
            64 => hex::decode(digits).ok()?,
            52 => nix_base32_decode(digits, 32)?,
            _ => return None,
        }
    };
    (bytes.len() == 32).then(|| format!("sha256:{}", hex::encode(bytes)))
}

/// Nix's base32 (its own alphabet, least significant digit last).
fn nix_base32_decode(s: &str, len: usize) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut out = vec![0u8; len];
    let chars = s.as_bytes();
    for (n, &c) in chars.iter().rev().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u16;
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let v = digit << j;
        *out.get_mut(i)? |= (v & 0xff) as u8;
        let carry = (v >> 8) as u8;
        match out.get_mut(i + 1) {
            Some(next) => *next |= carry,
            None if carry != 0 => return None,
            None => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HI: &str = "/nix/store/3gl8iplj7w6jn1v4zqxplgx09cgrn0r8-nixref-hi";
    const TOOL: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-tool";

    #[test]
    fn hashes_in_every_form_become_base16() {
        let hex = "sha256:10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6";
        for form in [
            "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=",
            hex,
            "sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h",
        ] {
            assert_eq!(base16_hash(form).as_deref(), Some(hex), "{form}");
        }
        for bad in ["md5:abc", "sha256-AAAA", "sha256:xyz", "sha256:eeee"] {
            assert_eq!(base16_hash(bad), None, "{bad}");
        }
    }

    /// id, path, hash, registrationTime, deriver, narSize, ultimate, sigs.
    type Row = (
        i64,
        String,
        String,
        i64,
        Option<String>,
        i64,
        Option<i64>,
        Option<String>,
    );

    fn infos() -> Vec<PathInfo> {
        vec![
            PathInfo {
                path: TOOL.into(),
                nar_hash: "sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h".into(),
                nar_size: 500,
                references: vec![HI.into(), TOOL.into()],
                deriver: Some("/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-tool.drv".into()),
                signatures: vec!["k:1".into(), "k:2".into()],
                ca: None,
                ultimate: true,
            },
            PathInfo {
                path: HI.into(),
                nar_hash: "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=".into(),
                nar_size: 120,
                references: vec![],
                deriver: None,
                signatures: vec![],
                ca: Some(
                    "fixed:r:sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h".into(),
                ),
                ultimate: false,
            },
        ]
    }

    #[test]
    fn same_closure_same_bytes_whatever_the_order() {
        let (a, b) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let one = database(&infos(), a.path()).expect("db");
        let mut reversed = infos();
        reversed.reverse();
        let two = database(&reversed, b.path()).expect("db");
        assert_eq!(one, two);

        let conn = Connection::open(a.path().join("db.sqlite")).expect("open");
        let rows: Vec<Row> = conn
            .prepare(
                "select id, path, hash, registrationTime, deriver, narSize, ultimate, sigs \
                 from ValidPaths order by id",
            )
            .expect("prepare")
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1, HI);
        assert_eq!(
            rows[0].2,
            "sha256:10551daed7fa467d0b58826e7eb9a0f2af7d693de319f2ef775fffcda244b9f6"
        );
        assert_eq!(rows[1].3, REGISTRATION_TIME);
        assert_eq!(rows[1].6, Some(1));
        assert_eq!(rows[1].7.as_deref(), Some("k:1 k:2"));
        let refs: Vec<(i64, i64)> = conn
            .prepare("select referrer, reference from Refs order by referrer, reference")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            refs,
            [(2, 1), (2, 2)],
            "the self-reference is kept, as Nix keeps it"
        );
    }

    #[test]
    fn entries_are_owned_by_the_account_with_a_root_per_output() {
        let dir = tempfile::tempdir().expect("tmp");
        let entries =
            entries(&infos(), &[TOOL.to_owned()], (1000, 100), dir.path()).expect("entries");
        let by_path: std::collections::BTreeMap<String, &Entry> =
            entries.iter().map(|e| (e.path.absolute(), e)).collect();
        for owned in [
            "/nix/store",
            "/nix/var/nix",
            "/nix/var/nix/db/db.sqlite",
            "/nix/var/nix/db/schema",
            "/nix/var/nix/profiles",
            "/nix/var/nix/temproots",
            "/nix/var/nix/gcroots/strata",
        ] {
            let e = by_path.get(owned).unwrap_or_else(|| panic!("no {owned}"));
            assert_eq!((e.uid, e.gid), (1000, 100), "{owned}");
        }
        let link = |p: &str| match &by_path[p].kind {
            strata_fstree::EntryKind::Symlink { target } => target.clone(),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(
            link("/nix/var/nix/gcroots/strata/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-tool"),
            TOOL
        );
        assert_eq!(
            link("/nix/var/nix/gcroots/profiles"),
            "/nix/var/nix/profiles"
        );
        let conf = &by_path["/etc/nix/nix.conf"];
        assert_eq!((conf.uid, conf.mode), (0, 0o644));
        let roots = entries
            .iter()
            .filter(|e| e.path.as_str().starts_with("nix/var/nix/gcroots/strata/"))
            .count();
        assert_eq!(roots, 1, "only requested outputs are roots");
    }

    #[test]
    fn a_reference_outside_the_closure_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = database(&infos()[..1], dir.path()).expect_err("HI is missing");
        assert!(err.to_string().contains(HI), "{err}");
    }
}
