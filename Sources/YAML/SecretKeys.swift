/// Recognises keys that hold secrets, so a literal secret never gets into Git.
///
/// A key is secret-like when its name, lowercased and without `_`, `-` and `.`, contains
/// `password`, `passwd`, `passphrase`, `secret`, `token` or `credential`, or is one of
/// `privateKey`, `apiKey`, `accessKey`, `secretKey`, `clientSecret`. Names that *point at* a
/// secret are not: `…File`, `…Path`, `…Name`, `…Ref`, `…Key(s)` after the word (the key inside
/// a Kubernetes Secret, as in `adminPasswordKey`), `existing…`. Public keys and `authorizedKeys`
/// never match. Only a non-empty string or number counts as a literal: `usePasswordFiles: true`
/// and `password: ""` hold no secret.
public enum SecretKeys {
    private static let words = bytes(["password", "passwd", "passphrase", "secret", "token", "credential"])
    private static let exact = bytes(["privatekey", "apikey", "accesskey", "secretkey", "secretaccesskey", "clientsecret"])
    private static let referenceSuffixes = bytes(["file", "files", "path", "name", "names", "ref", "selector", "key", "keys",
                                                  "enabled", "mode", "type", "length", "ttl", "policy"])
    private static let existing = Array("existing".utf8)
    private static let publicWord = Array("public".utf8)

    private static func bytes(_ words: [String]) -> [[UInt8]] { words.map { Array($0.utf8) } }

    public static func isSecretLike(_ key: String) -> Bool {
        // Byte-wise on purpose: this runs for every key of every Helm values tree, and
        // String.contains(String) builds a search table per call (it showed at 28% of a
        // 1,000-peer validate).
        var n: [UInt8] = []
        n.reserveCapacity(key.utf8.count)
        for b in key.utf8 where b != UInt8(ascii: "_") && b != UInt8(ascii: "-") && b != UInt8(ascii: ".") {
            n.append(b >= 65 && b <= 90 ? b + 32 : b)
        }
        if n.starts(with: existing) || contains(n, publicWord) { return false }
        if exact.contains(where: { n.count >= $0.count && n.suffix($0.count).elementsEqual($0) }) { return true }
        if referenceSuffixes.contains(where: { n.count >= $0.count && n.suffix($0.count).elementsEqual($0) }) { return false }
        return words.contains { contains(n, $0) }
    }

    private static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }

    /// Whether `key: value` writes a secret inline.
    public static func holdsInlineSecret(key: String, value: YAMLNode) -> Bool {
        guard isSecretLike(key), let scalar = value.scalar else { return false }
        switch ResolvedScalar(scalar) {
        case .null, .bool: return false
        case .string(let s): return !s.isEmpty
        case .int, .float: return true
        }
    }

    public static func message(key: String, remedy: String) -> String {
        "inline secret: \"\(key)\" must not hold a literal value in Git; \(remedy)"
    }

    /// Reports every inline secret in a free-form subtree (such as Helm values).
    /// - Parameters:
    ///   - remedy: what to do instead, completing "…must not hold a literal value in Git; ".
    /// - Returns: whether any was found.
    @discardableResult
    public static func scan(_ node: YAMLNode, path: FieldPath, context: DecodeContext, remedy: String) -> Bool {
        var found = false
        switch node.content {
        case .scalar:
            break
        case .sequence(let items):
            for (i, item) in items.enumerated() {
                found = scan(item, path: path.appending(index: i), context: context, remedy: remedy) || found
            }
        case .mapping(let pairs):
            for pair in pairs {
                let key = pair.key.scalar?.text ?? ""
                let at = path.appending(key)
                if holdsInlineSecret(key: key, value: pair.value) {
                    context.fail(.inlineSecret, message(key: key, remedy: remedy), at: pair.key.mark, path: at)
                    found = true
                } else {
                    found = scan(pair.value, path: at, context: context, remedy: remedy) || found
                }
            }
        }
        return found
    }
}
