// Package retry tries a request again when its failure is worth another
// try and the upstream can afford it.
//
// New builds the layer from a Policy (attempts, per-try timeout, backoff,
// retryable statuses, Retry-After cap) and the upstream's Budget; its
// documentation lists exactly when a request is retried. The backoff is
// internal/backoff's capped exponential backoff with full jitter; a
// Retry-After in the answer (delta-seconds or HTTP-date) lengthens the
// wait, up to MaxRetryAfter, and a wait that would end past the caller's
// deadline is not started.
//
// The Budget (Finagle's and Linkerd's design and defaults) caps retries at
// Ratio (20%) of the original requests over a sliding Window (10s) plus a
// floor of MinPerSecond (10/s), so that a failing upstream sees at most
// 1.2× its normal load from retries instead of MaxAttempts×; every answer
// it gives goes to BudgetOptions.OnRetry (metrics).
//
// Each try carries a resilience.Attempt: the balancer stage reads
// Attempt.Failed to avoid the endpoints that already failed this request
// and writes Attempt.Endpoint with the one it picked.
package retry
