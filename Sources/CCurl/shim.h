#ifndef NODEAGENT_CCURL_SHIM_H
#define NODEAGENT_CCURL_SHIM_H
#include <curl/curl.h>

/* curl_easy_setopt and curl_easy_getinfo are C variadics, which Swift cannot call
   ("Variadic function is unavailable"). These typed, non-variadic wrappers map 1-to-1 onto them.
   They can go once Swift imports variadic C functions. */
static inline CURLcode CCurl_setoptLong(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode CCurl_setoptString(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode CCurl_setoptPointer(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode CCurl_setoptSlist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode CCurl_setoptBlob(CURL *h, CURLoption o, const void *data, size_t len) {
    struct curl_blob b; b.data = (void *)data; b.len = len; b.flags = CURL_BLOB_COPY; /* curl keeps a copy */
    return curl_easy_setopt(h, o, &b);
}
typedef size_t (*CCurl_WriteCallback)(char *, size_t, size_t, void *);
static inline CURLcode CCurl_setoptWriteFunction(CURL *h, CCurl_WriteCallback cb) { return curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, cb); }
static inline CURLcode CCurl_setoptHeaderFunction(CURL *h, CCurl_WriteCallback cb) { return curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, cb); }
typedef int (*CCurl_XferInfoCallback)(void *, curl_off_t, curl_off_t, curl_off_t, curl_off_t);
static inline CURLcode CCurl_setoptXferInfoFunction(CURL *h, CCurl_XferInfoCallback cb) { return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, cb); }
static inline CURLcode CCurl_getinfoLong(CURL *h, CURLINFO i, long *out) { return curl_easy_getinfo(h, i, out); }
static inline CURLcode CCurl_getinfoDouble(CURL *h, CURLINFO i, double *out) { return curl_easy_getinfo(h, i, out); }
/* CURL_GLOBAL_DEFAULT imports as Int32 while curl_global_init takes a long. */
static inline long CCurl_globalDefault(void) { return CURL_GLOBAL_DEFAULT; }
#endif
