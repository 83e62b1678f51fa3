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
    /// Creates the directory with `mode` (and missing parents, 0755) if it does not exist. An
    /// existing directory keeps its mode: `/etc` must not become 0700 because a key lives there.
    func makeDirectory(_ path: String, mode: UInt32) throws(FileSystemError)
    /// Whether the path is a symbolic link (not followed).
    func isSymbolicLink(_ path: String) throws(FileSystemError) -> Bool
    /// Sets the owner of a file or directory (symlinks are not followed).
    func setOwner(_ path: String, uid: UInt32, gid: UInt32) throws(FileSystemError)
    /// The names in a directory (not `.` and `..`), sorted; nil when it does not exist.
    func list(_ directory: String) throws(FileSystemError) -> [String]?
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
    public var operation: String
    public var path: String
    public var errno: Int32

    public var description: String {
        "cannot \(operation) \(path): \(String(cString: strerror(errno)))"
    }
}

/// The real file system, with every path placed under `root` ("/" on a node).
///
/// Writes follow the temp-file, fsync, rename, fsync-directory sequence, so a crash at any
/// point leaves either the old or the new file, never a truncated one.
public struct RootedFileSystem: FileSystem {
    public let root: String

    public init(root: String = "/") {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
    }

    /// The real location of a node path.
    public func hostPath(_ path: String) -> String {
        precondition(path.hasPrefix("/"), "node paths are absolute: \(path)")
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
        var template = Array("\(directory)/.\(full[full.index(after: slash)...]).nodeagent-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw FileSystemError(operation: "create a temp file in", path: directory, errno: errno) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let temp = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var closed = false
        defer {
            if !closed { close(fd) }
        }
        do throws(FileSystemError) {
            var offset = 0
            while offset < bytes.count {
                let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileSystemError(operation: "write", path: temp, errno: errno)
                }
                offset += n
            }
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

    public func makeDirectory(_ path: String, mode: UInt32) throws(FileSystemError) {
        let full = hostPath(path)
        var st = stat()
        if lstat(full, &st) == 0 { return }
        try makeDirectories(full)
        guard chmod(full, mode_t(mode)) == 0 else { throw FileSystemError(operation: "chmod", path: full, errno: errno) }
    }

    public func isSymbolicLink(_ path: String) throws(FileSystemError) -> Bool {
        var st = stat()
        let full = hostPath(path)
        if lstat(full, &st) != 0 {
            if errno == ENOENT { return false }
            throw FileSystemError(operation: "lstat", path: full, errno: errno)
        }
        return (st.st_mode & S_IFMT) == S_IFLNK
    }

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

    /// Makes a rename or unlink durable: the directory entry itself must reach the disk.
    private func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}
