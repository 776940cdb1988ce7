package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/stream"
)

// WebhookGroup is the competing group of the Webhook wiring.
const WebhookGroup = "webhook"

// DefaultWebhookTimeout bounds one delivery unless WebhookConfig says
// otherwise.
const DefaultWebhookTimeout = 10 * time.Second

// WebhookConfig configures the Webhook wiring.
type WebhookConfig struct {
	// URL receives the deliveries (http or https). Empty disables the
	// wiring: Register adds no handler.
	URL string
	// Timeout bounds one delivery attempt, from connecting to reading the
	// response. Default DefaultWebhookTimeout.
	Timeout time.Duration
	// Client sends the requests. Default: a client of its own with Timeout.
	Client *http.Client
}

func (c *WebhookConfig) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultWebhookTimeout
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.Timeout}
	}
}

// Validate reports a configuration error.
func (c WebhookConfig) Validate() error {
	if c.Timeout < 0 {
		return errors.New("webhook: timeout must not be negative")
	}
	if c.URL == "" {
		return nil
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("webhook: error parsing URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook: URL must be an absolute http or https URL, not %q", u.Redacted())
	}
	return nil
}

// Webhook is the wiring that tells another service when a flow run
// completes: it consumes flow:event:* as the competing group WebhookGroup
// and POSTs each flow.completed event, as the stored event's JSON, to the
// configured URL with the headers Content-Type: application/json and
// Idempotency-Key: the event id. Other events are acknowledged untouched.
//
// Delivery is at least once: a failed attempt (no answer within the
// timeout, or a status other than 2xx) is an error, which the router retries
// with exponential backoff (3 retries) and then sets aside on the poison
// topic, so that one failing delivery never blocks the ones after it. The
// stream can deliver a message again too (a member died holding it), so the
// receiver should drop requests whose Idempotency-Key it has seen.
//
// It is the worked example of adding a wiring: one file with a type that has
// Name and Register, a provider in internal/di, and a parameter of
// provideWirings.
type Webhook struct {
	cfg       WebhookConfig
	sub       message.Subscriber
	delivered Counter
}

// NewWebhook returns the wiring; sub must be a competing subscriber of group
// WebhookGroup (it may be nil when cfg.URL is empty). delivered counts the
// successful deliveries of this instance.
func NewWebhook(cfg WebhookConfig, sub message.Subscriber, delivered Counter) (*Webhook, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.URL != "" && sub == nil {
		return nil, errors.New("webhook: a subscriber is required when a URL is set")
	}
	return &Webhook{cfg: cfg, sub: sub, delivered: delivered}, nil
}

// Name implements router.Wiring.
func (w *Webhook) Name() string { return WebhookGroup }

// Register implements router.Wiring. With no URL it adds nothing.
func (w *Webhook) Register(r *message.Router) error {
	if w.cfg.URL == "" {
		return nil
	}
	r.AddConsumerHandler(w.Name(), "flow:event:*", w.sub, w.handle)
	return nil
}

func (w *Webhook) handle(msg *message.Message) error {
	m, err := stream.FromWatermill(msg)
	if err != nil {
		return err
	}
	if m.Type != "flow.completed" {
		return nil
	}
	var d struct {
		Event domain.Event `json:"event"`
	}
	if err := json.Unmarshal(m.Data, &d); err != nil {
		return domain.Wrap(domain.CodeInvalidInput, err, fmt.Sprintf("error decoding flow event %s", m.EventID))
	}
	if d.Event.ID == "" {
		d.Event.ID = m.EventID
	}
	body, err := json.Marshal(d.Event)
	if err != nil {
		return fmt.Errorf("error encoding flow event %s: %w", d.Event.ID, err)
	}
	if err := w.post(msg.Context(), d.Event.ID, body); err != nil {
		return err
	}
	w.delivered.Inc()
	return nil
}

// post makes one delivery attempt. The URL stays out of the error, which is
// logged: it may carry a secret.
func (w *Webhook) post(ctx context.Context, key string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("error creating webhook request for %s: %w", key, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL
		}
		return fmt.Errorf("error delivering %s to the webhook: %w", key, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("error delivering %s to the webhook: it answered %s", key, resp.Status)
	}
	return nil
}
