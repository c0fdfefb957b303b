//! The FUSE side of the power-cut filesystem: an in-memory tree whose every file and directory
//! holds a live version (what programs see) and a durable version (what survives a cut).
//!
//! What makes what durable, as on a journalling filesystem that forgets unsynced data:
//! - a file's bytes and length: `fsync` or `fdatasync` of that file (any of its handles);
//! - a directory's entries (new names, renames, unlinks, mkdir, rmdir): `fsync` of that
//!   directory. A file that is durably named but was never synced comes back empty.
//!
//! Nothing else is: not `close`, not `sync_file_range` (which never reaches a FUSE
//! filesystem), not the passing of time. Modes, owners and times are not reverted.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::{OsStr, OsString},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::{Counters, CutReport, pages::Pages};

/// How long the kernel may cache names and attributes. Only this filesystem changes the tree
/// while it is mounted, and a cut remounts, so the kernel's caches never go stale.
const TTL: Duration = Duration::from_secs(1);

const ROOT: u64 = INodeNo::ROOT.0;

/// The whole tree, shared by the mounted session and the [`super::Mounted`] handle.
#[derive(Debug)]
pub(super) struct Tree {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    next_fh: u64,
    /// Open directory handles: the listing taken at `opendir`, so a reader sees one consistent
    /// listing however the directory changes meanwhile.
    listings: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    pub(super) counters: Counters,
}

#[derive(Debug)]
struct Node {
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    body: Body,
    /// Live names of this node.
    links: u32,
    /// Durable names of this node (entries in directories' durable versions).
    durable_links: u32,
    /// Open handles.
    open: u32,
    /// The directory holding a directory (its `..`).
    parent: u64,
}

#[derive(Debug)]
enum Body {
    File {
        live: Pages,
        durable: Pages,
    },
    Dir {
        live: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

impl Tree {
    /// An empty tree whose root has the mode and owner of the mount point.
    pub(super) fn new(perm: u16, uid: u32, gid: u32) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(perm, uid, gid, dir_body(), ROOT));
        Self {
            nodes,
            next_ino: ROOT + 1,
            next_fh: 1,
            listings: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// Cuts the power: every directory's entries and every file's content go back to their
    /// durable versions, and nodes no longer reachable from the root are gone. Call it with
    /// nothing mounted (nothing open).
    pub(super) fn cut(&mut self) -> CutReport {
        let mut parents = HashMap::new();
        let mut reachable = HashSet::from([ROOT]);
        let mut work = vec![ROOT];
        while let Some(dir) = work.pop() {
            if let Some(Body::Dir { durable, .. }) = self.nodes.get(&dir).map(|n| &n.body) {
                for &child in durable.values() {
                    if reachable.insert(child) {
                        parents.insert(child, dir);
                        work.push(child);
                    }
                }
            }
        }
        let mut report = CutReport::default();
        for (ino, node) in &self.nodes {
            match &node.body {
                Body::File { live, durable } if reachable.contains(ino) => {
                    let differing = live.differing_bytes(durable);
                    if differing > 0 {
                        report.files_reverted += 1;
                        report.bytes_reverted += differing;
                    }
                }
                Body::File { live, .. } => {
                    report.nodes_dropped += 1;
                    report.bytes_reverted += live.len();
                }
                Body::Dir { live, durable } if reachable.contains(ino) => {
                    if live != durable {
                        report.dirs_reverted += 1;
                    }
                }
                Body::Dir { .. } => report.nodes_dropped += 1,
            }
        }
        self.nodes.retain(|ino, _| reachable.contains(ino));
        let mut names: HashMap<u64, u32> = HashMap::new();
        for node in self.nodes.values_mut() {
            match &mut node.body {
                Body::File { live, durable } => *live = durable.clone(),
                Body::Dir { live, durable } => {
                    *live = durable.clone();
                    for &child in durable.values() {
                        *names.entry(child).or_default() += 1;
                    }
                }
            }
            node.open = 0;
        }
        for (ino, node) in &mut self.nodes {
            let count = names.get(ino).copied().unwrap_or(0);
            node.links = count;
            node.durable_links = count;
            node.parent = parents.get(ino).copied().unwrap_or(ROOT);
        }
        self.listings.clear();
        self.counters.cuts += 1;
        self.counters.bytes_reverted_last_cut = report.bytes_reverted;
        report
    }

    /// Makes everything durable as it is now, as the kernel's background writeback would
    /// given time (no program asked for it).
    pub(super) fn settle(&mut self) {
        for node in self.nodes.values_mut() {
            match &mut node.body {
                Body::File { live, durable } => *durable = live.clone(),
                Body::Dir { live, durable } => *durable = live.clone(),
            }
            node.durable_links = node.links;
        }
    }

    /// Bytes held in pages (live and durable versions, each shared page once).
    pub(super) fn resident_bytes(&self) -> u64 {
        let mut seen = HashSet::new();
        for node in self.nodes.values() {
            if let Body::File { live, durable } = &node.body {
                for page in live.allocated().chain(durable.allocated()) {
                    seen.insert(Arc::as_ptr(page));
                }
            }
        }
        (seen.len() * super::pages::PAGE) as u64
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        let (kind, size, blocks, nlink) = match &node.body {
            Body::File { live, .. } => (
                FileType::RegularFile,
                live.len(),
                live.allocated().count() as u64 * 8,
                node.links,
            ),
            Body::Dir { live, .. } => {
                let subdirs = live
                    .values()
                    .filter(|c| {
                        matches!(self.nodes.get(c).map(|n| &n.body), Some(Body::Dir { .. }))
                    })
                    .count() as u32;
                (FileType::Directory, 4096, 8, 2 + subdirs)
            }
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks,
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.ctime,
            kind,
            perm: node.perm,
            nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.node_mut(dir)?.body {
            Body::Dir { live, .. } => Ok(live),
            Body::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, dir: u64, name: &OsStr) -> Result<Option<u64>, Errno> {
        match &self.nodes.get(&dir).ok_or(Errno::ENOENT)?.body {
            Body::Dir { live, .. } => Ok(live.get(name).copied()),
            Body::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    /// Adds a new node named `name` in `parent`.
    fn add(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        body: Body,
    ) -> Result<u64, Errno> {
        if self.child(parent, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let perm = (mode & !umask & 0o7777) as u16;
        let mut node = Node::new(perm, req.uid(), req.gid(), body, parent);
        node.links = 1;
        self.nodes.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch_dir(parent);
        Ok(ino)
    }

    fn touch_dir(&mut self, dir: u64) {
        if let Some(node) = self.nodes.get_mut(&dir) {
            let now = SystemTime::now();
            node.mtime = now;
            node.ctime = now;
        }
    }

    /// Removes the live name `name` from `dir`.
    fn unname(&mut self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        let ino = self.entries_mut(dir)?.remove(name).ok_or(Errno::ENOENT)?;
        self.touch_dir(dir);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.links = node.links.saturating_sub(1);
            node.ctime = SystemTime::now();
        }
        self.collect(ino);
        Ok(ino)
    }

    /// Forgets nodes with no live name, no durable name and no open handle (they can never be
    /// seen again), and what only they named.
    fn collect(&mut self, ino: u64) {
        let mut work = vec![ino];
        while let Some(ino) = work.pop() {
            let unused = self.nodes.get(&ino).is_some_and(|n| {
                ino != ROOT && n.links == 0 && n.durable_links == 0 && n.open == 0
            });
            if !unused {
                continue;
            }
            let Some(node) = self.nodes.remove(&ino) else {
                continue;
            };
            if let Body::Dir { live, durable } = node.body {
                for child in live.values() {
                    if let Some(c) = self.nodes.get_mut(child) {
                        c.links = c.links.saturating_sub(1);
                    }
                    work.push(*child);
                }
                for child in durable.values() {
                    if let Some(c) = self.nodes.get_mut(child) {
                        c.durable_links = c.durable_links.saturating_sub(1);
                    }
                    work.push(*child);
                }
            }
        }
    }

    fn open(&mut self, ino: u64) -> Result<FileHandle, Errno> {
        self.node_mut(ino)?.open += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        Ok(FileHandle(fh))
    }

    fn release(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open = node.open.saturating_sub(1);
        }
        self.collect(ino);
    }

    fn fsync_file(&mut self, ino: u64, datasync: bool) -> Result<(), Errno> {
        if self.is_dir(ino) {
            return self.fsync_dir(ino);
        }
        if let Body::File { live, durable } = &mut self.node_mut(ino)?.body {
            *durable = live.clone();
        }
        self.counters.fsyncs += 1;
        if datasync {
            self.counters.fdatasyncs += 1;
        }
        Ok(())
    }

    fn fsync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        let node = self.node_mut(ino)?;
        let Body::Dir { live, durable } = &mut node.body else {
            return Err(Errno::ENOTDIR);
        };
        let before = std::mem::replace(durable, live.clone());
        let after: Vec<u64> = durable.values().copied().collect();
        self.counters.fsyncdirs += 1;
        for ino in &after {
            if let Some(n) = self.nodes.get_mut(ino) {
                n.durable_links += 1;
            }
        }
        for ino in before.values() {
            if let Some(n) = self.nodes.get_mut(ino) {
                n.durable_links = n.durable_links.saturating_sub(1);
            }
            self.collect(*ino);
        }
        Ok(())
    }

    fn rename(
        &mut self,
        from_dir: u64,
        from: &OsStr,
        to_dir: u64,
        to: &OsStr,
    ) -> Result<(), Errno> {
        let moving = self.child(from_dir, from)?.ok_or(Errno::ENOENT)?;
        let moving_dir = self.is_dir(moving);
        if let Some(target) = self.child(to_dir, to)? {
            if target == moving {
                return Ok(());
            }
            match (moving_dir, self.is_dir(target)) {
                (true, true) => {
                    if let Some(Body::Dir { live, .. }) = self.nodes.get(&target).map(|n| &n.body)
                        && !live.is_empty()
                    {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (false, false) => {}
            }
            self.unname(to_dir, to)?;
        }
        self.entries_mut(from_dir)?.remove(from);
        self.entries_mut(to_dir)?.insert(to.to_owned(), moving);
        self.touch_dir(from_dir);
        self.touch_dir(to_dir);
        let node = self.node_mut(moving)?;
        node.ctime = SystemTime::now();
        if moving_dir {
            node.parent = to_dir;
        }
        Ok(())
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(
            self.nodes.get(&ino).map(|n| &n.body),
            Some(Body::Dir { .. })
        )
    }

    fn listing(&self, ino: u64) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        let Body::Dir { live, .. } = &node.body else {
            return Err(Errno::ENOTDIR);
        };
        let mut listing = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (node.parent, FileType::Directory, OsString::from("..")),
        ];
        for (name, child) in live {
            let kind = if self.is_dir(*child) {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            listing.push((*child, kind, name.clone()));
        }
        Ok(listing)
    }
}

impl Node {
    fn new(perm: u16, uid: u32, gid: u32, body: Body, parent: u64) -> Self {
        let now = SystemTime::now();
        Self {
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            body,
            links: 0,
            durable_links: 0,
            open: 0,
            parent,
        }
    }
}

fn dir_body() -> Body {
    Body::Dir {
        live: BTreeMap::new(),
        durable: BTreeMap::new(),
    }
}

fn file_body() -> Body {
    Body::File {
        live: Pages::default(),
        durable: Pages::default(),
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

// === impl PowerCutFs ===

/// The FUSE filesystem of one mount session.
#[derive(Debug)]
pub(super) struct PowerCutFs {
    pub(super) tree: Arc<Mutex<Tree>>,
}

impl PowerCutFs {
    fn tree(&self) -> MutexGuard<'_, Tree> {
        // A panic inside a handler leaves the tree as consistent as any single step does.
        self.tree
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reply_entry(tree: &Tree, ino: Result<u64, Errno>, reply: ReplyEntry) {
        match ino.and_then(|ino| tree.attr(ino)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn done(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let tree = self.tree();
        let ino = tree
            .child(parent.0, name)
            .and_then(|c| c.ok_or(Errno::ENOENT));
        Self::reply_entry(&tree, ino, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut tree = self.tree();
        let result = tree.node_mut(ino.0).and_then(|node| {
            if let Some(size) = size {
                match &mut node.body {
                    Body::File { live, .. } => live.set_len(size),
                    Body::Dir { .. } => return Err(Errno::EISDIR),
                }
                node.mtime = SystemTime::now();
            }
            if let Some(mode) = mode {
                node.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                node.uid = uid;
            }
            if let Some(gid) = gid {
                node.gid = gid;
            }
            if let Some(t) = atime {
                node.atime = time(t);
            }
            if let Some(t) = mtime {
                node.mtime = time(t);
            }
            node.ctime = SystemTime::now();
            Ok(())
        });
        match result.and_then(|()| tree.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(Errno::EPERM);
        }
        let mut tree = self.tree();
        let ino = tree.add(req, parent.0, name, mode, umask, file_body());
        Self::reply_entry(&tree, ino, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut tree = self.tree();
        let ino = tree.add(req, parent.0, name, mode, umask, dir_body());
        Self::reply_entry(&tree, ino, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut tree = self.tree();
        let result = match tree.child(parent.0, name) {
            Ok(Some(ino)) if tree.is_dir(ino) => Err(Errno::EISDIR),
            Ok(Some(_)) => tree.unname(parent.0, name).map(drop),
            Ok(None) => Err(Errno::ENOENT),
            Err(e) => Err(e),
        };
        done(result, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut tree = self.tree();
        let result = match tree.child(parent.0, name) {
            Ok(Some(ino)) => match tree.nodes.get(&ino).map(|n| &n.body) {
                Some(Body::Dir { live, .. }) if !live.is_empty() => Err(Errno::ENOTEMPTY),
                Some(Body::Dir { .. }) => tree.unname(parent.0, name).map(drop),
                _ => Err(Errno::ENOTDIR),
            },
            Ok(None) => Err(Errno::ENOENT),
            Err(e) => Err(e),
        };
        done(result, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let result = self.tree().rename(parent.0, name, newparent.0, newname);
        done(result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut tree = self.tree();
        if tree.is_dir(ino.0) {
            return reply.error(Errno::EISDIR);
        }
        match tree.open(ino.0) {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let tree = self.tree();
        match tree.nodes.get(&ino.0).map(|n| &n.body) {
            Some(Body::File { live, .. }) => reply.data(&live.read(offset, size as usize)),
            Some(Body::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut tree = self.tree();
        let Ok(node) = tree.node_mut(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Body::File { live, .. } = &mut node.body else {
            return reply.error(Errno::EISDIR);
        };
        live.write(offset, data);
        let now = SystemTime::now();
        node.mtime = now;
        node.ctime = now;
        tree.counters.writes += 1;
        tree.counters.bytes_written += data.len() as u64;
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.tree().release(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(self.tree().fsync_file(ino.0, datasync), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut tree = self.tree();
        let opened = tree
            .listing(ino.0)
            .and_then(|listing| Ok((listing, tree.open(ino.0)?)));
        match opened {
            Ok((listing, fh)) => {
                tree.listings.insert(fh.0, listing);
                reply.opened(fh, FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.tree();
        let Some(listing) = tree.listings.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let mut tree = self.tree();
        tree.listings.remove(&fh.0);
        tree.release(ino.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(self.tree().fsync_dir(ino.0), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const BLOCKS: u64 = 1 << 24; // 64 GiB of 4 KiB blocks
        let tree = self.tree();
        let used = (tree.resident_bytes() / 4096).min(BLOCKS);
        let files = tree.nodes.len() as u64;
        reply.statfs(
            BLOCKS,
            BLOCKS - used,
            BLOCKS - used,
            1 << 20,
            (1 << 20) - files.min(1 << 20),
            4096,
            255,
            4096,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks modes itself (`default_permissions`); this only says it exists.
        let exists = self.tree().nodes.contains_key(&ino.0);
        done(if exists { Ok(()) } else { Err(Errno::ENOENT) }, reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut tree = self.tree();
        // The kernel sends `create` for a name it believes missing; if it exists after all,
        // open it unless `O_EXCL` says otherwise.
        let ino = match tree.child(parent.0, name) {
            Ok(Some(_)) if flags & libc::O_EXCL != 0 => Err(Errno::EEXIST),
            Ok(Some(ino)) if tree.is_dir(ino) => Err(Errno::EISDIR),
            Ok(Some(ino)) => Ok(ino),
            Ok(None) => tree.add(req, parent.0, name, mode, umask, file_body()),
            Err(e) => Err(e),
        };
        let created = ino.and_then(|ino| Ok((tree.attr(ino)?, tree.open(ino)?)));
        match created {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut tree = self.tree();
        let result = match tree.node_mut(ino.0).map(|n| &mut n.body) {
            Ok(Body::File { live, .. }) => match mode {
                0 => {
                    if offset + length > live.len() {
                        live.set_len(offset + length);
                    }
                    Ok(())
                }
                libc::FALLOC_FL_KEEP_SIZE => Ok(()),
                _ => Err(Errno::EOPNOTSUPP),
            },
            Ok(Body::Dir { .. }) => Err(Errno::EISDIR),
            Err(e) => Err(e),
        };
        done(result, reply);
    }
}
