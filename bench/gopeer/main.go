// A K0IN-like peer for bench/pool.py: a small Go Ollama → OpenAI proxy for /api/chat
// (non-streaming), written here for the benchmark, not K0IN/openai-ollama-proxy's code. Like
// that proxy it is a net/http server whose upstream requests go through Go's default
// http.Transport: a connection pool that keeps at most 2 idle connections per host
// (http.DefaultMaxIdleConnsPerHost). It trusts $SSL_CERT_FILE, as every Go program on Linux does.
//
//	go build -o gopeer . && ./gopeer -listen 127.0.0.1:18600 -upstream https://127.0.0.1:18500/v1
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"time"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type ollamaChat struct {
	Model    string    `json:"model"`
	Messages []message `json:"messages"`
	Stream   *bool     `json:"stream"`
}

type openaiChat struct {
	Model    string    `json:"model"`
	Messages []message `json:"messages"`
	Stream   bool      `json:"stream"`
}

type openaiAnswer struct {
	Choices []struct {
		Message      message `json:"message"`
		FinishReason string  `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

func main() {
	listen := flag.String("listen", "127.0.0.1:18600", "address to serve on (loopback)")
	upstream := flag.String("upstream", "", "OpenAI-compatible base URL, e.g. https://127.0.0.1:18500/v1")
	flag.Parse()
	key := os.Getenv("OPENAI_API_KEY")
	client := &http.Client{Timeout: 300 * time.Second} // http.DefaultTransport underneath

	http.HandleFunc("/api/chat", func(w http.ResponseWriter, r *http.Request) {
		var in ollamaChat
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, `{"error":"invalid JSON"}`, http.StatusBadRequest)
			return
		}
		body, _ := json.Marshal(openaiChat{Model: in.Model, Messages: in.Messages, Stream: false})
		req, _ := http.NewRequestWithContext(r.Context(), "POST", *upstream+"/chat/completions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var answer openaiAnswer
		if resp.StatusCode != 200 || json.Unmarshal(raw, &answer) != nil || len(answer.Choices) == 0 {
			w.WriteHeader(http.StatusBadGateway)
			json.NewEncoder(w).Encode(map[string]string{"error": "upstream error"})
			return
		}
		took := time.Since(start).Nanoseconds()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"model": in.Model, "created_at": time.Now().UTC().Format(time.RFC3339Nano),
			"message": answer.Choices[0].Message, "done": true, "done_reason": answer.Choices[0].FinishReason,
			"total_duration": took, "prompt_eval_count": answer.Usage.PromptTokens, "eval_count": answer.Usage.CompletionTokens,
		})
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
