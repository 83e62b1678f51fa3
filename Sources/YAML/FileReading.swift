#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// Reads whole files with POSIX calls, turning failures into diagnostics that name the file.
/// The one read-to-end loop of the project: every module reads files through it.
public enum FileReading {
    /// Files larger than this are refused before reading: no desired state is that big.
    public static let maxSize = 16 << 20

    public static func read(_ path: String, maxSize: Int = FileReading.maxSize) throws(DiagnosticsError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw failure(path, "cannot stat: \(String(cString: strerror(errno)))") }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw failure(path, "is a directory, not a file") }
        return try readAll(fd, limit: maxSize) { code in
            code == EFBIG ? failure(path, "larger than \(maxSize >> 20) MiB; not a desired-state file")
                : failure(path, "cannot read: \(String(cString: strerror(code)))")
        }
    }

    private static func failure(_ path: String, _ message: String) -> DiagnosticsError {
        DiagnosticsError([Diagnostic(file: path, mark: .start, code: .io, message: message)])
    }

    /// Reads `fd` to its end, retrying interrupted reads.
    /// - Parameters:
    ///   - limit: bytes allowed; reading more fails with `EFBIG`.
    ///   - failure: turns an errno into the caller's error type.
    public static func readAll<E: Error>(_ fd: Int32, limit: Int?, _ failure: (Int32) -> E) throws(E) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure(errno)
            }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
            if let limit, out.count > limit { throw failure(EFBIG) }
        }
    }
}
