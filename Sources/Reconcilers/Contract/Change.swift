public import KubeClient
public import YAML

/// One step a plan wants to take, as a plain value: what, to which resource, and how.
///
/// It prints as one line of a human diff (`+ wireguard peer laptop 10.8.0.2/32`,
/// `~ k3s v1.30.5+k3s1 → v1.31.4+k3s1`), followed by a line diff for file contents.
public struct Change: Sendable, Equatable, CustomStringConvertible {
    public enum Action: String, Sendable, Equatable {
        case create, update, delete, run

        public var symbol: String {
            switch self {
            case .create: return "+"
            case .update: return "~"
            case .delete: return "-"
            case .run: return "!"
            }
        }
    }

    /// What `apply` does for this change.
    public enum Operation: Sendable, Equatable {
        /// Write a file atomically; `before` is the current content (nil: the file is absent).
        case writeFile(path: String, before: [UInt8]?, after: [UInt8], mode: UInt32)
        case removeFile(path: String)
        case runCommand([String])
        /// Server-side apply of this object, exactly as planned (rendered, stamped, secret
        /// values included: never printed, only its subject and diff are).
        case applyObject(ResourceRef, JSONValue)
        /// Delete this object (one nodeagent labelled as its own).
        case deleteObject(ResourceRef)
        /// Shown but not taken: it waits for what the reason names (a release's dependsOn).
        case hold(String)
        /// Make a directory with this mode, if missing.
        case makeDirectory(path: String, mode: UInt32)
        /// Load this nftables table (its body, as `nft -f` reads it) in one transaction.
        case loadRuleset(String)
        /// One step on a network interface and its WireGuard device.
        case interface(InterfaceStep)
        /// K3s: download the binary from `url` and install it once its SHA-256 is `sha256`.
        case installBinary(url: String, sha256: String)
        case enableService(String)
        case restartService(String)
    }

    /// The steps of a WireGuard interface, each with what it sets.
    public enum InterfaceStep: Sendable, Equatable {
        /// A new private key into this file (generated on the node, never shown).
        case generateKey(file: String)
        case createLink(String)
        case setAddress(interface: String, address: String)
        case setMTU(interface: String, mtu: Int)
        case bringUp(String)
        /// `wg syncconf` of the key, port and peers (read from their files at that moment).
        case syncDevice(String)
    }

    public var action: Action
    /// The resource, as a user names it: `file /etc/ssh/sshd_config.d/10-nodeagent.conf`.
    public var subject: String
    /// A short note after the subject: `v1.30.5+k3s1 → v1.31.4+k3s1`.
    public var detail: String?
    /// Lines removed (`-`) and added (`+`), printed under the subject. Computed from the
    /// contents for a file write.
    public var diff: [String]
    public var operation: Operation

    public init(_ action: Action, _ subject: String, detail: String? = nil, diff: [String] = [], operation: Operation) {
        self.action = action
        self.subject = subject
        self.detail = detail
        self.diff = diff
        self.operation = operation
    }

    /// What a saved plan records of a reconciler's changes, to tell at apply time whether the
    /// plan still holds: every change as it prints (action, subject, detail, diff), less the
    /// lines of the time stamp a change of a HelmChart carries (taken anew by each plan).
    public static func fingerprint(_ changes: [Change]) -> String {
        let text = changes.map { change in
            change.description.split(separator: "\n").filter { !$0.contains(ReleaseHealth.specAppliedAnnotation) }.joined(separator: "\n")
        }.joined(separator: "\n--\n")
        return Digest.sha256Hex(Array(text.utf8))
    }

    /// A step shown but not taken yet: it waits for something to become Ready first.
    public var isHeld: Bool {
        if case .hold = operation { return true }
        return false
    }

    public var description: String {
        var line = "\(action.symbol) \(subject)"
        if let detail { line += " \(detail)" }
        var lines = diff
        if case .writeFile(_, let before, let after, let mode) = operation, lines.isEmpty {
            lines = mode & 0o077 == 0
                ? ["(contents not shown: the file is private, mode \(String(mode, radix: 8)))"]
                : TextDiff.lines(from: before ?? [], to: after)
        }
        for l in lines { line += "\n    \(l)" }
        return line
    }
}

/// A line diff for plan output: the lines removed (`-`) and added (`+`), in order.
public enum TextDiff {
    /// Above this many lines on either side the diff is summarised instead.
    static let maxLines = 2000

    public static func lines(from before: [UInt8], to after: [UInt8]) -> [String] {
        let a = split(before), b = split(after)
        if a.count > maxLines || b.count > maxLines {
            return ["(\(a.count) lines → \(b.count) lines; too long to show)"]
        }
        // Longest common subsequence by dynamic programming; files here are small.
        let n = a.count, m = b.count
        var table = [[Int]](repeating: [Int](repeating: 0, count: m + 1), count: n + 1)
        for i in stride(from: n - 1, through: 0, by: -1) {
            for j in stride(from: m - 1, through: 0, by: -1) {
                table[i][j] = a[i] == b[j] ? table[i + 1][j + 1] + 1 : max(table[i + 1][j], table[i][j + 1])
            }
        }
        var out: [String] = []
        var i = 0, j = 0
        while i < n || j < m {
            if i < n, j < m, a[i] == b[j] {
                i += 1
                j += 1
            } else if i < n, j == m || table[i + 1][j] >= table[i][j + 1] {
                out.append("-" + a[i])   // removals before additions, as diff -u prints them
                i += 1
            } else {
                out.append("+" + b[j])
                j += 1
            }
        }
        return out
    }

    private static func split(_ bytes: [UInt8]) -> [String] {
        if bytes.isEmpty { return [] }
        var lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        return lines
    }
}
