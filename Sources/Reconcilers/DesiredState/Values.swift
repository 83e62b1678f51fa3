#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif
public import YAML

/// A name Kubernetes accepts for releases and namespaces (RFC 1123 label: lowercase letters,
/// digits and `-`, at most 63, starting and ending alphanumeric).
public struct DNSLabel: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var value: String

    public init(parsing text: String) throws(InvalidValue) {
        guard (1...63).contains(text.count), let first = text.first, let last = text.last,
              first.isLetter || first.isNumber, last.isLetter || last.isNumber,
              text.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }) else {
            throw InvalidValue("\"\(text)\" is not a valid name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit")
        }
        value = text
    }

    public var description: String { value }
}

/// A name for a WireGuard peer or a database: letters, digits, `-`, `_`, `.`, at most 63, as
/// it becomes part of file names.
public struct SimpleName: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var value: String

    public init(parsing text: String) throws(InvalidValue) {
        guard (1...63).contains(text.count), let first = text.first, first.isASCII, first.isLetter || first.isNumber || first == "_",
              text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw InvalidValue("\"\(text)\" is not a valid name: use 1-63 of a-z A-Z 0-9 - _ ., starting with a letter, digit or '_'")
        }
        value = text
    }

    public var description: String { value }
}

/// An absolute, normalised file path: starts with `/`, no `.`/`..` segments, no empty segments.
public struct AbsolutePath: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var value: String

    public init(parsing text: String) throws(InvalidValue) {
        guard text.hasPrefix("/") else {
            throw InvalidValue("\"\(text)\" must be an absolute path (starting with /)")
        }
        let segments = text.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        if text != "/", segments.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) {
            throw InvalidValue("\"\(text)\" must be a normalised path (no //, trailing /, . or .. segments)")
        }
        // Paths are written into wg-quick's PostUp (run by bash), systemd units and configs.
        if let bad = text.first(where: { !($0.isASCII && ($0.isLetter || $0.isNumber || "/._-+@,:".contains($0))) }) {
            throw InvalidValue("\"\(text)\" contains \(bad.isWhitespace || !bad.isASCII || bad.asciiValue.map { $0 < 0x20 } == true ? "a space, a control or a non-ASCII character" : "\"\(bad)\""): "
                               + "paths are limited to letters, digits and / . _ - + @ , : (they are written into shell lines and configs)")
        }
        value = text
    }

    public init(_ literal: StaticString) {
        value = "\(literal)"
    }

    /// The directory that holds this path: `/etc/a/b` → `/etc/a`.
    public var directory: String {
        let parent = value.split(separator: "/").dropLast().joined(separator: "/")
        return "/" + parent
    }

    public var description: String { value }
}

/// A K3s release such as `v1.31.4+k3s1` (or `v1.32.0-rc1+k3s1`), ordered by version.
public struct K3sVersion: YAMLScalarParsable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int, minor: Int, patch: Int
    public var prerelease: String?
    public var k3sRevision: Int

    public init(parsing text: String) throws(InvalidValue) {
        let bad = InvalidValue("\"\(text)\" is not a K3s version; expected the form v1.31.4+k3s1")
        guard text.hasPrefix("v"), let plus = text.firstIndex(of: "+") else { throw bad }
        let core = text[text.index(after: text.startIndex)..<plus]
        let build = text[text.index(after: plus)...]
        guard build.hasPrefix("k3s"), let rev = Int(build.dropFirst(3)), rev >= 1, build.dropFirst(3).allSatisfy(\.isNumber) else { throw bad }
        var numbers = core
        prerelease = nil
        if let dash = core.firstIndex(of: "-") {
            let pre = core[core.index(after: dash)...]
            guard !pre.isEmpty, pre.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else { throw bad }
            prerelease = String(pre)
            numbers = core[..<dash]
        }
        let parts = numbers.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) && $0.count <= 6 }),
              let a = Int(parts[0]), let b = Int(parts[1]), let c = Int(parts[2]) else { throw bad }
        (major, minor, patch, k3sRevision) = (a, b, c, rev)
    }

    public var description: String {
        "v\(major).\(minor).\(patch)\(prerelease.map { "-\($0)" } ?? "")+k3s\(k3sRevision)"
    }

    public static func < (a: K3sVersion, b: K3sVersion) -> Bool {
        if (a.major, a.minor, a.patch) != (b.major, b.minor, b.patch) {
            return (a.major, a.minor, a.patch) < (b.major, b.minor, b.patch)
        }
        switch (a.prerelease, b.prerelease) {
        case (nil, .some): return false
        case (.some, nil): return true
        case let (.some(x), .some(y)) where x != y: return x < y
        default: return a.k3sRevision < b.k3sRevision
        }
    }
}

/// A SHA-256 digest: 64 hexadecimal digits, stored lowercase.
public struct SHA256Digest: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var hex: String

    public init(parsing text: String) throws(InvalidValue) {
        guard text.count == 64, text.allSatisfy(\.isHexDigit) else {
            throw InvalidValue("sha256 must be 64 hexadecimal digits (got \(text.count) characters)")
        }
        hex = text.lowercased()
    }

    public var description: String { hex }
}

/// A length of time written like Go's durations: `90s`, `5m`, `1h30m`, `500ms`.
public struct TimeSpan: YAMLScalarParsable, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var milliseconds: Int64

    public init(milliseconds: Int64) {
        self.milliseconds = milliseconds
    }

    public init(parsing text: String) throws(InvalidValue) {
        let bad = InvalidValue("\"\(text)\" is not a duration; write a number with a unit (ms, s, m, h, d), such as 90s, 5m or 1h30m")
        var total: Int64 = 0
        var rest = Substring(text)
        guard !rest.isEmpty else { throw bad }
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let n = Int64(digits), n < 1_000_000_000 else { throw bad }
            rest = rest.dropFirst(digits.count)
            let unit = rest.prefix { $0.isASCII && $0.isLetter }
            rest = rest.dropFirst(unit.count)
            let factor: Int64
            switch unit {
            case "ms": factor = 1
            case "s": factor = 1000
            case "m": factor = 60_000
            case "h": factor = 3_600_000
            case "d": factor = 86_400_000
            default: throw bad
            }
            total += n * factor
        }
        milliseconds = total
    }

    public var duration: Duration { .milliseconds(milliseconds) }
    public static func < (a: TimeSpan, b: TimeSpan) -> Bool { a.milliseconds < b.milliseconds }

    public var description: String {
        var ms = milliseconds, out = ""
        for (unit, size) in [("h", Int64(3_600_000)), ("m", 60_000), ("s", 1000), ("ms", 1)] where ms >= size {
            out += "\(ms / size)\(unit)"
            ms %= size
        }
        return out.isEmpty ? "0s" : out
    }
}

/// A WireGuard public key: base64 of 32 bytes (44 characters ending in `=`).
public struct WireGuardKey: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var base64: String

    public init(parsing text: String) throws(InvalidValue) {
        guard text.count == 44, text.hasSuffix("="), let data = Data(base64Encoded: text), data.count == 32 else {
            throw InvalidValue("\"\(text)\" is not a WireGuard public key (base64 of 32 bytes, 44 characters, as `wg pubkey` prints)")
        }
        base64 = text
    }

    public var description: String { base64 }
}

/// One OpenSSH public key line: `TYPE BASE64 [COMMENT]`, whose blob starts with `TYPE`.
public struct SSHPublicKey: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public static let types = ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                               "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"]
    public var line: String

    public init(parsing text: String) throws(InvalidValue) {
        if text.contains("PRIVATE KEY") {
            throw InvalidValue("this is a private key; authorizedKeys takes public keys (the .pub file) only")
        }
        let fields = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard fields.count >= 2, SSHPublicKey.types.contains(String(fields[0])) else {
            throw InvalidValue("not an OpenSSH public key: expected \"TYPE BASE64 [COMMENT]\" with TYPE one of \(SSHPublicKey.types.joined(separator: ", "))")
        }
        guard let blob = Data(base64Encoded: String(fields[1])), blob.count > 4 else {
            throw InvalidValue("the key data of this \(fields[0]) key is not valid base64")
        }
        let bytes = [UInt8](blob)
        let length = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
        guard bytes.count >= 4 + length, String(decoding: bytes[4..<(4 + length)], as: UTF8.self) == fields[0] else {
            throw InvalidValue("the key data does not match its type \(fields[0]); was the key truncated or mixed up?")
        }
        line = text
    }

    public var description: String { line }
}

/// An e-mail address (`local@domain`); deliberately loose, as SMTP servers decide the rest.
public struct EmailAddress: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var value: String

    public init(parsing text: String) throws(InvalidValue) {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !text.contains(where: { $0 == " " || $0 == "<" || $0 == ">" }),
              Hostname.isValid(String(parts[1])) else {
            throw InvalidValue("\"\(text)\" is not an e-mail address (local@domain)")
        }
        value = text
    }

    public var description: String { value }
}

/// A URL with one of the schemes a field allows; `git@host:path` counts as `ssh`.
public struct RepoURL: YAMLScalarParsable, Sendable, Hashable, CustomStringConvertible {
    public var value: String
    public var scheme: String

    public init(parsing text: String) throws(InvalidValue) {
        if text.hasPrefix("git@"), text.contains(":") {
            value = text
            scheme = "ssh"
            return
        }
        let parts = text.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty,
              !text.contains(where: { $0 == " " || $0 == "\n" }) else {
            throw InvalidValue("\"\(text)\" is not a URL (such as https://example.com/path)")
        }
        let scheme = parts[0].lowercased()
        guard ["https", "http", "oci", "ssh", "git", "file"].contains(scheme) else {
            throw InvalidValue("\"\(text)\": unsupported URL scheme \"\(scheme)\"")
        }
        // https://user:password@host/ would put a credential into Git.
        let authority = parts[1].split(separator: "/", maxSplits: 1).first ?? ""
        if let at = authority.lastIndex(of: "@"), authority[..<at].contains(":") {
            throw InvalidValue("inline secret: the URL carries a password; put credentials in a file on the node instead")
        }
        value = text
        self.scheme = scheme
    }

    /// Whether the host is this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
    public var isLoopback: Bool { Self.isLoopbackURL(value) }

    /// The same for any URL text.
    public static func isLoopbackURL(_ value: String) -> Bool {
        guard let rest = value.split(separator: "://", maxSplits: 1).dropFirst().first else { return false }
        // The authority ends at the first "/", "?" or "#": `http://evil?@127.0.0.1/` is evil's.
        var host = String(rest.prefix { !"/?#".contains($0) })
        if let at = host.lastIndex(of: "@") { host = String(host[host.index(after: at)...]) }
        if host.hasPrefix("[") { host = String(host.dropFirst().prefix { $0 != "]" }) } else if let colon = host.lastIndex(of: ":") {
            host = String(host[..<colon])
        }
        if host.lowercased() == "localhost" { return true }
        return (try? IPAddress(parsing: host))?.isLoopback ?? false
    }

    public var description: String { value }
}
