#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif
internal import YAML

/// Reads and writes the node's files. Every path is absolute as seen on the node; an
/// implementation may place them under another root (tests use a temp directory).
public protocol FileSystem: Sendable {
    /// The file's bytes, or nil when it does not exist.
    func read(_ path: String) throws(FileSystemError) -> [UInt8]?
    /// The permission bits (such as 0o600), or nil when the file does not exist.
    func mode(_ path: String) throws(FileSystemError) -> UInt32?
    /// Replaces the file atomically: readers see the old or the new content, never a mix, and
    /// after a crash the file is whole. Creates missing parent directories (0755).
    func write(_ path: String, _ bytes: [UInt8], mode: UInt32) throws(FileSystemError)
    /// Removes the file; a missing file is not an error.
    func remove(_ path: String) throws(FileSystemError)
    /// Removes a directory and everything in it, without following a link (a link is removed,
    /// not what it points to); nothing when it does not exist.
    func removeTree(_ path: String) throws(FileSystemError)
    /// Creates the directory with `mode` (and missing parents, 0755) if it does not exist. An
    /// existing directory keeps its mode: `/etc` must not become 0700 because a key lives there.
    func makeDirectory(_ path: String, mode: UInt32) throws(FileSystemError)
    /// The names in a directory (not `.` and `..`), sorted; nil when it does not exist.
    func list(_ directory: String) throws(FileSystemError) -> [String]?
    /// Reads `home/subdirectory/name` where an unprivileged user owns `home` (the SSH user's
    /// `~/.ssh/authorized_keys`): each step through a descriptor opened without following a
    /// link, never blocking on a FIFO, a regular file of at most `limit` bytes.
    /// - Returns: nil when the subdirectory or the file does not exist.
    func readInUserDirectory(home: String, subdirectory: String, name: String, limit: Int) throws(FileSystemError) -> [UInt8]?
    /// Replaces `home/subdirectory/name` atomically, the same way: the subdirectory (created with
    /// `directoryMode` when missing) and the file end up owned by `uid`/`gid`, and every call
    /// after the first open is relative to a verified descriptor, so swapping a path for a link
    /// between two steps changes nothing.
    func writeInUserDirectory(home: String, subdirectory: String, name: String, _ bytes: [UInt8], mode: UInt32, directoryMode: UInt32,
                              uid: UInt32, gid: UInt32) throws(FileSystemError)
    /// Where / of the node is on this machine ("/" on a node; a temp directory in tests).
    var root: String { get }
    /// Where a node path really is on this machine: for the paths handed to another program
    /// (`sshd -t -f`, `pg_dump --file`, a revert timer's shell).
    func hostPath(_ path: String) -> String
    /// Reads a secret file the desired state names: a regular file (no link, FIFO or device),
    /// owned by the user nodeagent runs as, with no group or other permission bits, of at most
    /// `limit` bytes. nil when it does not exist.
    func readSecret(_ path: String, limit: Int) throws(FileSystemError) -> [UInt8]?
    /// The file's SHA-256, read in 1 MiB pieces (a K3s binary, a dump); nil when it does not exist.
    func sha256(_ path: String) throws(FileSystemError) -> String?
    /// Copies a file, streamed, atomically: a temp file beside the target, fsync, rename.
    func copy(_ from: String, to target: String, mode: UInt32) throws(FileSystemError)
    /// Puts a finished file in place in one rename, with `mode` set first.
    func move(_ from: String, to target: String, mode: UInt32) throws(FileSystemError)
    /// A new, empty file at `path` (a leftover is removed first; missing parents created 0755),
    /// opened for writing with `mode`, for a caller that streams into it (a download): it
    /// writes, fsyncs and closes the descriptor, and removes the file if it gives up.
    func createForStreaming(_ path: String, mode: UInt32) throws(FileSystemError) -> Int32
    /// The file's size in bytes; nil when it does not exist.
    func size(_ path: String) throws(FileSystemError) -> Int64?
    /// Takes away every permission bit beyond `mode` from an existing file or directory (a
    /// dump an earlier version left 0644), never through a link; a missing path is no error.
    func restrict(_ path: String, to mode: UInt32) throws(FileSystemError)
}

extension FileSystem {
    /// Writes only when content or mode differ, so a converged pass touches nothing.
    /// - Returns: whether it wrote.
    @discardableResult
    public func writeIfChanged(_ path: String, _ bytes: [UInt8], mode: UInt32) throws(FileSystemError) -> Bool {
        if try read(path) == bytes, try self.mode(path) == mode { return false }
        try write(path, bytes, mode: mode)
        return true
    }
}

public struct FileSystemError: Error, Sendable, CustomStringConvertible {
    /// A file refused for what it is rather than for an errno.
    public enum Problem: Sendable, Equatable {
        case symbolicLink
        case notRegularFile
        case notDirectory
        case tooLarge(limit: Int)
        case foreignOwner(uid: UInt32)
        case exposed(mode: UInt32)
        case hardLinked
    }

    public var operation: String
    public var path: String
    public var errno: Int32
    public var problem: Problem?

    public init(operation: String, path: String, errno: Int32, problem: Problem? = nil) {
        (self.operation, self.path, self.errno, self.problem) = (operation, path, errno, problem)
    }

    public var description: String {
        guard let problem else { return "cannot \(operation) \(path): \(String(cString: strerror(errno)))" }
        switch problem {
        case .symbolicLink: return "\(path) is a symbolic link: nodeagent does not follow links here (name or place the file itself)"
        case .notRegularFile: return "\(path) is not a regular file (a FIFO, device or socket is refused)"
        case .notDirectory: return "\(path) is not a directory"
        case .tooLarge(let limit): return "\(path) is larger than \(limit) bytes: refused"
        case .foreignOwner(let uid): return "\(path) is owned by uid \(uid), not by the user nodeagent runs as or the account it manages"
        case .exposed(let mode): return "\(path) is mode \(String(mode & 0o777, radix: 8)): it must be readable by its owner only (chmod 600)"
        case .hardLinked: return "\(path) has other hard links: refused"
        }
    }
}

/// The real file system, with every path placed under `root` ("/" on a node).
///
/// Writes follow the temp-file, fsync, rename, fsync-directory sequence, so a crash at any
/// point leaves either the old or the new file, never a truncated one.
///
/// nodeagent's own state is named by paths under `defaultStateDirectory` (`/var/lib/nodeagent`)
/// everywhere in the code; they live under `stateDirectory` (agent.yaml's `stateDirectory`),
/// so that one setting moves all of it, the daemon's included.
public struct RootedFileSystem: FileSystem {
    public static let defaultStateDirectory = "/var/lib/nodeagent"

    public let root: String
    /// Where the paths under `defaultStateDirectory` really are, as a node path.
    public let stateDirectory: String

    public init(root: String = "/", stateDirectory: String = RootedFileSystem.defaultStateDirectory) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
        self.stateDirectory = stateDirectory.count > 1 && stateDirectory.hasSuffix("/") ? String(stateDirectory.dropLast()) : stateDirectory
    }

    /// The real location of a node path.
    public func hostPath(_ path: String) -> String {
        precondition(path.hasPrefix("/"), "node paths are absolute: \(path)")
        var path = path
        let state = Self.defaultStateDirectory
        if stateDirectory != state, path == state || path.hasPrefix(state + "/") {
            path = stateDirectory + path.dropFirst(state.count)
        }
        return root == "/" ? path : root + path
    }

    public func read(_ path: String) throws(FileSystemError) -> [UInt8]? {
        let full = hostPath(path)
        let fd = open(full, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw FileSystemError(operation: "open", path: full, errno: errno)
        }
        defer { close(fd) }
        return try FileReading.readAll(fd, limit: nil) { FileSystemError(operation: "read", path: full, errno: $0) }
    }

    public func mode(_ path: String) throws(FileSystemError) -> UInt32? {
        var st = stat()
        let full = hostPath(path)
        if stat(full, &st) != 0 {
            if errno == ENOENT { return nil }
            throw FileSystemError(operation: "stat", path: full, errno: errno)
        }
        return UInt32(st.st_mode) & 0o7777
    }

    public func write(_ path: String, _ bytes: [UInt8], mode: UInt32) throws(FileSystemError) {
        let full = hostPath(path)
        let slash = full.lastIndex(of: "/")!
        let directory = slash == full.startIndex ? "/" : String(full[..<slash])
        try makeDirectories(directory)
        // Close-on-exec from the start (not mkstemp and then fcntl): a command another thread
        // starts in between must not inherit it — a file open for writing in any process
        // cannot be executed (ETXTBSY).
        var fd: Int32 = -1
        var temp = ""
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<100 where fd < 0 {
            let suffix = (0..<6).map { _ in String(Int.random(in: 0..<36, using: &generator), radix: 36) }.joined()
            temp = "\(directory)/.\(full[full.index(after: slash)...]).nodeagent-\(suffix)"
            fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if fd < 0, errno != EEXIST { break }
        }
        guard fd >= 0 else { throw FileSystemError(operation: "create a temp file in", path: directory, errno: errno) }
        var closed = false
        defer {
            if !closed { close(fd) }
        }
        do throws(FileSystemError) {
            try Self.writeAll(fd, bytes, shown: temp)
            guard fchmod(fd, mode_t(mode)) == 0 else { throw FileSystemError(operation: "chmod", path: temp, errno: errno) }
            guard fsync(fd) == 0 else { throw FileSystemError(operation: "fsync", path: temp, errno: errno) }
            closed = true
            guard close(fd) == 0 else { throw FileSystemError(operation: "close", path: temp, errno: errno) }
            guard rename(temp, full) == 0 else { throw FileSystemError(operation: "rename into place", path: full, errno: errno) }
        } catch {
            unlink(temp)
            throw error
        }
        syncDirectory(directory)
        let nodeSlash = path.lastIndex(of: "/")!
        removeStaleTemps(of: String(path[path.index(after: nodeSlash)...]),
                         in: nodeSlash == path.startIndex ? "/" : String(path[..<nodeSlash]))
    }

    /// Temp files of earlier writes of the same file that a `kill -9` stopped before their
    /// rename: never live, but left behind. Any older than a minute goes (a younger one may
    /// belong to a write in progress, the daemon's or a command's).
    private func removeStaleTemps(of name: String, in directory: String) {
        let prefix = ".\(name).nodeagent-"
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        for entry in ((try? list(directory)) ?? nil ?? []) where entry.hasPrefix(prefix) && entry.count == prefix.count + 6 {
            var st = stat()
            let full = hostPath("\(directory == "/" ? "" : directory)/\(entry)")
            if lstat(full, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, now.tv_sec - st.st_mtim.tv_sec > 60 { unlink(full) }
        }
    }

    public func remove(_ path: String) throws(FileSystemError) {
        let full = hostPath(path)
        if unlink(full) != 0, errno != ENOENT {
            throw FileSystemError(operation: "remove", path: full, errno: errno)
        }
        let slash = full.lastIndex(of: "/")!
        syncDirectory(slash == full.startIndex ? "/" : String(full[..<slash]))
    }

    public func removeTree(_ path: String) throws(FileSystemError) {
        try Self.removeTree(host: hostPath(path))
    }

    static func removeTree(host full: String) throws(FileSystemError) {
        var st = stat()
        guard lstat(full, &st) == 0 else {
            if errno == ENOENT { return }
            throw FileSystemError(operation: "remove", path: full, errno: errno)
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            if unlink(full) != 0, errno != ENOENT { throw FileSystemError(operation: "remove", path: full, errno: errno) }
            return
        }
        guard let dir = opendir(full) else { throw FileSystemError(operation: "open directory", path: full, errno: errno) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != ".", name != ".." { names.append(name) }
        }
        closedir(dir)
        for name in names { try removeTree(host: full + "/" + name) }
        if rmdir(full) != 0, errno != ENOENT { throw FileSystemError(operation: "remove", path: full, errno: errno) }
    }

    public func makeDirectory(_ path: String, mode: UInt32) throws(FileSystemError) {
        let full = hostPath(path)
        var st = stat()
        if lstat(full, &st) == 0 { return }
        try makeDirectories(full)
        guard chmod(full, mode_t(mode)) == 0 else { throw FileSystemError(operation: "chmod", path: full, errno: errno) }
    }

    /// Whether the path is a symbolic link (not followed). (Not on the seam: nodeagent never
    /// decides by path what it then opens; see `writeInUserDirectory`.)
    public func isSymbolicLink(_ path: String) throws(FileSystemError) -> Bool {
        var st = stat()
        let full = hostPath(path)
        if lstat(full, &st) != 0 {
            if errno == ENOENT { return false }
            throw FileSystemError(operation: "lstat", path: full, errno: errno)
        }
        return (st.st_mode & S_IFMT) == S_IFLNK
    }

    /// Sets the owner of a file or directory (symlinks are not followed).
    public func setOwner(_ path: String, uid: UInt32, gid: UInt32) throws(FileSystemError) {
        let full = hostPath(path)
        guard lchown(full, uid, gid) == 0 else { throw FileSystemError(operation: "chown", path: full, errno: errno) }
    }

    public func list(_ directory: String) throws(FileSystemError) -> [String]? {
        let full = hostPath(directory)
        guard let dir = opendir(full) else {
            if errno == ENOENT { return nil }
            throw FileSystemError(operation: "open directory", path: full, errno: errno)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public func readInUserDirectory(home: String, subdirectory: String, name: String, limit: Int) throws(FileSystemError) -> [UInt8]? {
        let homePath = hostPath(home)
        guard let homeFD = try Self.openDirectory(AT_FDCWD, homePath, shown: homePath, missingIsNil: true) else { return nil }
        defer { close(homeFD) }
        let dirPath = "\(homePath)/\(subdirectory)"
        guard let dirFD = try Self.openDirectory(homeFD, subdirectory, shown: dirPath, missingIsNil: true) else { return nil }
        defer { close(dirFD) }
        let path = "\(dirPath)/\(name)"
        return try Self.readRegular(dirFD, name, shown: path, limit: limit) { st throws(FileSystemError) in
            guard st.st_nlink == 1 else { throw FileSystemError(operation: "read", path: path, errno: EPERM, problem: .hardLinked) }
        }
    }

    public func writeInUserDirectory(home: String, subdirectory: String, name: String, _ bytes: [UInt8], mode: UInt32, directoryMode: UInt32,
                                     uid: UInt32, gid: UInt32) throws(FileSystemError) {
        let homePath = hostPath(home)
        // Only root's missing home is made (a fresh root in tests; /root on a node exists): a
        // user's home that is missing is a broken account, not something to invent.
        var st = stat()
        if uid == 0, lstat(homePath, &st) != 0, errno == ENOENT { try makeDirectories(homePath) }
        guard let homeFD = try Self.openDirectory(AT_FDCWD, homePath, shown: homePath, missingIsNil: false) else { return }
        defer { close(homeFD) }
        try Self.requireOwner(homeFD, path: homePath, allowed: [uid, 0])
        let dirPath = "\(homePath)/\(subdirectory)"
        var created = false
        if mkdirat(homeFD, subdirectory, mode_t(directoryMode)) == 0 {
            created = true
        } else if errno != EEXIST {
            throw FileSystemError(operation: "create directory", path: dirPath, errno: errno)
        }
        guard let dirFD = try Self.openDirectory(homeFD, subdirectory, shown: dirPath, missingIsNil: false) else { return }
        defer { close(dirFD) }
        // The descriptor is the directory we checked; whatever happens to its name from here on,
        // every change below lands in it. One that existed must already be the user's: a
        // root-owned directory there was not made by the user, nor by nodeagent.
        try Self.requireOwner(dirFD, path: dirPath, allowed: created ? [uid, 0] : [uid])
        guard fchown(dirFD, uid, gid) == 0 else { throw FileSystemError(operation: "chown", path: dirPath, errno: errno) }
        if created, fchmod(dirFD, mode_t(directoryMode)) != 0 { throw FileSystemError(operation: "chmod", path: dirPath, errno: errno) }
        var generator = SystemRandomNumberGenerator()
        let temp = ".\(name).nodeagent-" + (0..<6).map { _ in String(Int.random(in: 0..<36, using: &generator), radix: 36) }.joined()
        let fd = openat(dirFD, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FileSystemError(operation: "create a temp file in", path: dirPath, errno: errno) }
        var closed = false
        defer { if !closed { close(fd) } }
        do throws(FileSystemError) {
            try Self.writeAll(fd, bytes, shown: "\(dirPath)/\(temp)")
            guard fchmod(fd, mode_t(mode)) == 0 else { throw FileSystemError(operation: "chmod", path: "\(dirPath)/\(temp)", errno: errno) }
            guard fchown(fd, uid, gid) == 0 else { throw FileSystemError(operation: "chown", path: "\(dirPath)/\(temp)", errno: errno) }
            guard fsync(fd) == 0 else { throw FileSystemError(operation: "fsync", path: "\(dirPath)/\(temp)", errno: errno) }
            closed = true
            guard close(fd) == 0 else { throw FileSystemError(operation: "close", path: "\(dirPath)/\(temp)", errno: errno) }
            guard renameat(dirFD, temp, dirFD, name) == 0 else {
                throw FileSystemError(operation: "rename into place", path: "\(dirPath)/\(name)", errno: errno)
            }
        } catch {
            unlinkat(dirFD, temp, 0)
            throw error
        }
        fsync(dirFD)
    }

    public func readSecret(_ path: String, limit: Int) throws(FileSystemError) -> [UInt8]? {
        let full = hostPath(path)
        return try Self.readRegular(AT_FDCWD, full, shown: full, limit: limit) { st throws(FileSystemError) in
            guard st.st_uid == geteuid() else { throw FileSystemError(operation: "read", path: full, errno: EPERM, problem: .foreignOwner(uid: st.st_uid)) }
            guard UInt32(st.st_mode) & 0o077 == 0 else {
                throw FileSystemError(operation: "read", path: full, errno: EPERM, problem: .exposed(mode: UInt32(st.st_mode) & 0o7777))
            }
        }
    }

    /// Opens a directory without following a link in its last component.
    /// - Returns: nil when it does not exist and `missingIsNil`.
    private static func openDirectory(_ at: Int32, _ name: String, shown: String, missingIsNil: Bool) throws(FileSystemError) -> Int32? {
        let fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd >= 0 { return fd }
        let code = errno
        if code == ENOENT, missingIsNil { return nil }
        if code == ELOOP { throw FileSystemError(operation: "open directory", path: shown, errno: code, problem: .symbolicLink) }
        if code == ENOTDIR {
            // O_NOFOLLOW with O_DIRECTORY reports a link to a directory as ENOTDIR on some kernels.
            var st = stat()
            let isLink = fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
            throw FileSystemError(operation: "open directory", path: shown, errno: code, problem: isLink ? .symbolicLink : .notDirectory)
        }
        throw FileSystemError(operation: "open directory", path: shown, errno: code)
    }

    private static func requireOwner(_ fd: Int32, path: String, allowed: [UInt32]) throws(FileSystemError) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileSystemError(operation: "stat", path: path, errno: errno) }
        guard allowed.contains(st.st_uid) else { throw FileSystemError(operation: "use", path: path, errno: EPERM, problem: .foreignOwner(uid: st.st_uid)) }
    }

    /// Opens a regular file without following a link and without blocking (a FIFO opens at once
    /// and is then refused), checks it, and reads at most `limit` bytes.
    private static func readRegular(_ at: Int32, _ name: String, shown: String, limit: Int,
                                    check: (stat) throws(FileSystemError) -> Void) throws(FileSystemError) -> [UInt8]? {
        let fd = openat(at, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == ENOENT { return nil }
            throw FileSystemError(operation: "open", path: shown, errno: code, problem: code == ELOOP ? .symbolicLink : nil)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileSystemError(operation: "stat", path: shown, errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FileSystemError(operation: "read", path: shown, errno: EPERM, problem: .notRegularFile) }
        guard st.st_size <= limit else { throw FileSystemError(operation: "read", path: shown, errno: EFBIG, problem: .tooLarge(limit: limit)) }
        try check(st)
        return try FileReading.readAll(fd, limit: limit) { code in
            FileSystemError(operation: "read", path: shown, errno: code, problem: code == EFBIG ? .tooLarge(limit: limit) : nil)
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], shown: String) throws(FileSystemError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileSystemError(operation: "write", path: shown, errno: errno)
            }
            offset += n
        }
    }

    private func makeDirectories(_ directory: String) throws(FileSystemError) {
        var st = stat()
        if stat(directory, &st) == 0 { return }
        if let slash = directory.lastIndex(of: "/"), slash != directory.startIndex {
            try makeDirectories(String(directory[..<slash]))
        }
        if mkdir(directory, 0o755) != 0, errno != EEXIST {
            throw FileSystemError(operation: "create directory", path: directory, errno: errno)
        }
    }

    public func sha256(_ path: String) throws(FileSystemError) -> String? {
        try Digest.sha256Hex(file: hostPath(path))
    }

    public func copy(_ from: String, to target: String, mode: UInt32) throws(FileSystemError) {
        try Self.streamCopy(hostPath(from), to: hostPath(target), mode: mode)
    }

    public func move(_ from: String, to target: String, mode: UInt32) throws(FileSystemError) {
        let (source, destination) = (hostPath(from), hostPath(target))
        // Durable before it is in place: a crash after the rename never leaves a hollow file.
        let fd = open(source, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw FileSystemError(operation: "open", path: from, errno: errno) }
        let synced = fsync(fd) == 0 && fchmod(fd, mode_t(mode)) == 0
        let e = errno
        close(fd)
        guard synced else { throw FileSystemError(operation: "fsync", path: from, errno: e) }
        guard rename(source, destination) == 0 else { throw FileSystemError(operation: "rename", path: target, errno: errno) }
        syncDirectory(parentDirectory(of: destination))
    }

    public func size(_ path: String) throws(FileSystemError) -> Int64? {
        var st = stat()
        guard lstat(hostPath(path), &st) == 0 else {
            if errno == ENOENT { return nil }
            throw FileSystemError(operation: "stat", path: path, errno: errno)
        }
        return Int64(st.st_size)
    }

    public func restrict(_ path: String, to mode: UInt32) throws(FileSystemError) {
        let fd = open(hostPath(path), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return }
            throw FileSystemError(operation: "open", path: path, errno: errno)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileSystemError(operation: "stat", path: path, errno: errno) }
        let current = UInt32(st.st_mode) & 0o7777
        guard current & ~mode != 0 else { return }
        guard fchmod(fd, mode_t(current & mode)) == 0 else { throw FileSystemError(operation: "chmod", path: path, errno: errno) }
    }

    public func createForStreaming(_ path: String, mode: UInt32) throws(FileSystemError) -> Int32 {
        let real = hostPath(path)
        unlink(real)
        try makeDirectory(parentDirectory(of: path), mode: 0o755)
        let fd = open(real, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(mode))
        guard fd >= 0 else { throw FileSystemError(operation: "create", path: path, errno: errno) }
        return fd
    }

    /// Streams `from` into a temp file beside `target`, fsyncs and renames it into place.
    private static func streamCopy(_ from: String, to target: String, mode: UInt32) throws(FileSystemError) {
        let input = open(from, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw FileSystemError(operation: "open", path: from, errno: errno) }
        defer { close(input) }
        let temp = target + ".nodeagent-tmp"
        unlink(temp)
        let output = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(mode))
        guard output >= 0 else { throw FileSystemError(operation: "create", path: temp, errno: errno) }
        /// Gives up: the partial copy goes, the target is untouched.
        func fail(_ operation: String, _ path: String) -> FileSystemError {
            let e = errno
            close(output)
            unlink(temp)
            return FileSystemError(operation: operation, path: path, errno: e)
        }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(input, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("read", from)
            }
            if n == 0 { break }
            var offset = 0
            while offset < n {
                let w = buffer[offset..<n].withUnsafeBytes { Glibc.write(output, $0.baseAddress, $0.count) }
                if w < 0 {
                    if errno == EINTR { continue }
                    throw fail("write", temp)
                }
                offset += w
            }
        }
        guard fsync(output) == 0 else { throw fail("fsync", temp) }
        guard close(output) == 0 else {
            let e = errno
            unlink(temp)
            throw FileSystemError(operation: "close", path: temp, errno: e)
        }
        guard rename(temp, target) == 0 else {
            let e = errno
            unlink(temp)
            throw FileSystemError(operation: "rename", path: target, errno: e)
        }
        let fd = open(parentDirectory(of: target), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    /// Makes a rename or unlink durable: the directory entry itself must reach the disk.
    private func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}

/// The directory part of a node or host path ("/" for a file at the top).
func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}
