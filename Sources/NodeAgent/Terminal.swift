#if canImport(Glibc)
import Glibc
#endif

/// Writes to stderr, where errors and progress go so that stdout stays data.
enum Terminal {
    static func error(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            offset += n
        }
    }
}
