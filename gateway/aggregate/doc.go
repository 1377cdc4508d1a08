// Package aggregate answers one gateway route by calling several upstreams
// ("branches") in parallel and merging their JSON answers into one object.
//
// A route with the path template /orders/{id}, configured with
//
//	{"branches": [
//	  {"name": "order", "url": "http://orders/v1/orders/{id}"},
//	  {"name": "items", "url": "http://catalog/v1/items?order={id}", "required": false}
//	]}
//
// answers GET /orders/42 with
//
//	{"order": <orders' body>, "items": <catalog's body>}
//
// # Requests
//
// Every branch request is sent through the http.RoundTripper given to New,
// normally the outbound transport, which resolves the service name in the
// URL and applies that upstream's timeout, retries and breaker. Branch
// requests carry the incoming request's context, so a client that goes
// away cancels every branch, and each runs under its own timeout inside
// the aggregation's timeout.
//
// {name} placeholders in a branch URL are filled from the incoming
// request's path values (r.PathValue), escaped for where they stand (path
// or query). Placeholders may stand only in the path and the query, never
// in the scheme or host, so a client cannot choose which service is
// called; a value of "." or ".." in the path is refused for the same
// reason. With forward_query the incoming query string is appended.
//
// Branch requests carry the incoming request's end-to-end headers, so
// credentials and trace context reach the upstreams, except:
//   - hop-by-hop headers (RFC 9110 §7.6.1, and those listed in Connection);
//   - headers that describe the incoming body (Content-Length,
//     Content-Type, Content-Encoding, Expect): branch requests have no
//     body, since the incoming one can be read once and fanning it out
//     would mean buffering it;
//   - conditional and range headers (If-*, Range): they are about the
//     merged representation, and an upstream answering 304 or 206 would
//     fail or truncate its branch;
//   - the caller's Meridian-Timeout, which is stale by the time a branch
//     is sent; the outbound transport writes a fresh one from the branch's
//     deadline.
//
// Accept is set to application/json and Accept-Encoding to identity: the
// gateway has to read every body to merge it, so it asks for plain bytes
// rather than decompress, and fails a branch that is encoded anyway.
//
// # When a branch fails
//
// A branch fails on a transport error, on its timeout (or the
// aggregation's), on a status outside 2xx, on a body that is not JSON
// (including an empty one), on a body larger than max_branch_body and,
// for a branch without a name, on a body that is not a JSON object. An
// upstream's own error body is never passed on: clients see the gateway's
// description of the failure and the upstream's status, and the log has
// the rest.
//
// With on_failure "fail" (the default) the first required branch to fail
// decides the answer: the other branches are cancelled at once, since
// their answers can no longer be used, and the client gets a problem
// (RFC 9457) with status 502, or 504 when the branch timed out, whose
// "branch" and "upstream_status" members name the branch and what it
// answered. With "partial", and for optional branches under "fail", a
// failed branch's key is null and the merged object lists the failures
// under "_errors":
//
//	{
//	  "order": {"id": 42},
//	  "items": null,
//	  "_errors": {
//	    "items": {"status": 503, "detail": "circuit breaker is open"}
//	  }
//	}
//
// Each entry's status is the upstream's own status when it answered
// outside 2xx, 504 when the branch timed out, the status of the transport's
// error code when the transport refused the call (503 for an open breaker
// or no instances, 429 for a client-side rate limit) and 502 otherwise.
// Entries follow the configuration's order; a branch without a name is
// listed as "branches[i]", its index in the configuration. When every
// branch failed the answer is a 502 problem (504 when every one timed
// out) whose "errors" member has the same shape as "_errors". A caller
// whose own deadline passes first gets a 504; one that goes away gets
// nothing.
//
// # Merging
//
// A named branch's body is placed under its name as it came, less the
// whitespace around it (a json.RawMessage): checked to be JSON, never
// decoded or re-encoded. A branch without a name must answer a JSON
// object, whose top-level members are merged into the root; only that top
// level is decoded. When
// two branches set the same key, the later one in the configuration wins
// and the key keeps the position where it first appeared. "_errors"
// belongs to the gateway: a root-merged branch's own "_errors" member is
// dropped, so a client never mistakes an upstream's field for the
// gateway's report. Keys are written in configuration order (a root
// branch's members in the order its upstream sent them), and "_errors"
// last, so the answer's shape is the same from one request to the next;
// a map and json.Marshal would sort the keys and re-encode every value.
//
// Bodies are read into per-route pooled buffers, grown once from
// Content-Length where the upstream sends one and never read past
// max_branch_body; a named branch's bytes stay in their buffer until they
// are copied into the answer.
//
// # Configuration
//
// Config is plain JSON with documented defaults; decode it strictly
// (unknown fields are errors) and check it with Validate, which reports
// every problem at once, each naming its field ("branches[1].url"). New
// validates again and compiles the URL templates, so nothing is parsed
// per request.
package aggregate
