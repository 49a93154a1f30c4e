package notifier

import (
	"log"
	"net/http"
	"time"
)

// Limits of the public server, against senders that are slow on purpose:
// every connection's headers must arrive within ReadHeaderTimeout and fit
// in MaxHeaderBytes, its body within the Handler's BodyTimeout (a read
// deadline set per request), and nothing waits on a place while it reads.
// So memory stays about connections × (MaxHeaderBytes + the body bytes
// actually received), and slow connections cost a goroutine each, never a
// place a genuine notification needs.
const (
	// ReadHeaderTimeout bounds the request line and headers.
	ReadHeaderTimeout = 2 * time.Second
	// WriteTimeout bounds a request from its headers to the end of its
	// answer: BodyTimeout, two SlotWaits and PublishTimeout fit in it.
	WriteTimeout = 10 * time.Second
	// IdleTimeout closes idle keep-alive connections.
	IdleTimeout = 60 * time.Second
	// MaxHeaderBytes caps the request line and headers; WeChat Pay's are
	// under 2 KiB.
	MaxHeaderBytes = 16 << 10
)

// NewServer answers the public HTTP server of h on addr with the limits
// above; ReadTimeout is a backstop behind the per-request body deadline.
func NewServer(addr string, h *Handler, errLog *log.Logger) *http.Server {
	return &http.Server{
		Addr: addr, Handler: h, ErrorLog: errLog,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadHeaderTimeout + h.bodyWait + time.Second,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}
