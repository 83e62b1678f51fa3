/// Reads the fields of one mapping node: refuses keys it does not know (with a "did you mean"),
/// turns inline secrets into a pointed error, and decodes fields by name.
///
/// ```swift
/// let r = try MappingReader(node, path: path, context: context, keys: ["address", "listenPort"])
/// address = try r.required("address")
/// listenPort = try r.optional("listenPort") ?? 51820
/// try r.finish()
/// ```
public struct MappingReader {
    public let node: YAMLNode
    public let path: FieldPath
    public let context: DecodeContext
    private var values: [String: YAMLNode] = [:]
    /// Known keys that a refused key looked like a typo of; their "missing" error would only repeat it.
    private var suggested: Set<String> = []
    private var failed = false

    /// - Parameters:
    ///   - keys: every key this mapping may hold. Others are errors, unless `ignoringOthers`.
    ///   - ignoringOthers: for files other tools write (a kubeconfig), whose extra keys are not ours to refuse.
    public init(_ node: YAMLNode, path: FieldPath, context: DecodeContext, keys: [String], ignoringOthers: Bool = false) throws {
        self.node = node
        self.path = path
        self.context = context
        guard let pairs = node.mapping else {
            throw context.fail(.typeMismatch, "expected a mapping, found \(node.kindDescription)", at: node.mark, path: path)
        }
        for pair in pairs {
            let key = pair.key.scalar?.text ?? ""
            if keys.contains(key) {
                values[key] = pair.value
                continue
            }
            if ignoringOthers { continue }
            failed = true
            let at = path.appending(key)
            if SecretKeys.holdsInlineSecret(key: key, value: pair.value) {
                let fileKey = keys.first { $0.lowercased() == key.lowercased() + "file" } ?? "\(key)File"
                context.fail(.inlineSecret, SecretKeys.message(key: key, remedy: "set \"\(fileKey)\" to the path of a file on the node holding it"),
                             at: pair.key.mark, path: at)
            } else {
                if let guess = Suggestion.closest(to: key, in: keys) { suggested.insert(guess) }
                context.fail(.unknownKey, Self.unknownKeyMessage(key, known: keys), at: pair.key.mark, path: at)
            }
        }
    }

    static func unknownKeyMessage(_ key: String, known: [String]) -> String {
        if let guess = Suggestion.closest(to: key, in: known) {
            return "unknown key \"\(key)\" (did you mean \"\(guess)\"?)"
        }
        return "unknown key \"\(key)\"; expected one of: \(known.joined(separator: ", "))"
    }

    /// Whether the key is present with a non-null value.
    public func has(_ key: String) -> Bool {
        values[key].map { !$0.isNull } ?? false
    }

    /// The raw node of a present, non-null key.
    public func node(_ key: String) -> YAMLNode? {
        values[key].flatMap { $0.isNull ? nil : $0 }
    }

    /// Decodes a field that must be present and non-null.
    public func required<T: YAMLDecodable>(_ key: String, as type: T.Type = T.self) throws -> T {
        guard let value = values[key], !value.isNull else {
            if values[key] == nil, suggested.contains(key) { throw DecodeFailure() }
            let at = values[key]?.mark ?? node.mark
            throw context.fail(.missingField, "missing required field \"\(key)\"", at: at,
                               path: values[key] == nil ? path : path.appending(key))
        }
        return try T(yaml: value, path: path.appending(key), context: context)
    }

    /// Decodes a field that may be absent or null (both mean "not set").
    public func optional<T: YAMLDecodable>(_ key: String, as type: T.Type = T.self) throws -> T? {
        guard let value = values[key], !value.isNull else { return nil }
        return try T(yaml: value, path: path.appending(key), context: context)
    }

    /// Throws if any key was refused; call after decoding the fields.
    public func finish() throws {
        if failed { throw DecodeFailure() }
    }
}

/// "Did you mean" for misspelt keys and values.
public enum Suggestion {
    /// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
    public static func closest(to word: String, in candidates: [String]) -> String? {
        let lower = word.lowercased()
        if let same = candidates.first(where: { $0.lowercased() == lower }) { return same }
        let extending = candidates.filter { $0.lowercased().hasPrefix(lower) }
        if lower.count >= 3, extending.count == 1 { return extending[0] }
        let limit = max(1, min(3, word.count / 3))
        var best: (String, Int)?
        for c in candidates {
            let d = distance(lower, c.lowercased())
            if d <= limit, d < (best?.1 ?? .max) { best = (c, d) }
        }
        return best?.0
    }

    /// Edit distance counting an insertion, deletion, substitution or swap of two neighbours
    /// as one edit (optimal string alignment), so `nmae` is one edit from `name`.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { d[i][0] = i }
        for j in 0...b.count { d[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
                }
            }
        }
        return d[a.count][b.count]
    }
}
