package quiz

// Question is one multiple-choice question. Answer is the index of the
// right choice.
type Question struct {
	ID      string
	Text    string
	Choices []string
	Answer  int
}

// Points: +10 for a right answer, -5 for a wrong one, 0 for a question
// shown but left unanswered (the seed's scoring).
const (
	PointsRight = 10
	PointsWrong = -5
)

// Demo are the practice questions, not scored.
var Demo = []Question{
	{ID: "d1", Text: "Which is a prime number?", Choices: []string{"4", "7", "9"}, Answer: 1},
	{ID: "d2", Text: "What colour is the sky on a clear day?", Choices: []string{"blue", "green"}, Answer: 0},
}

// Test are the scored questions, asked in order.
var Test = []Question{
	{ID: "t1", Text: "What does MQTT QoS 1 guarantee?", Choices: []string{"at most once", "at least once", "exactly once"}, Answer: 1},
	{ID: "t2", Text: "Which port does plain MQTT use by default?", Choices: []string{"1883", "8883", "80"}, Answer: 0},
	{ID: "t3", Text: "What is 12 × 12?", Choices: []string{"124", "144", "154"}, Answer: 1},
	{ID: "t4", Text: "Which data structure is FIFO?", Choices: []string{"stack", "queue", "heap"}, Answer: 1},
	{ID: "t5", Text: "What does fsync do?", Choices: []string{"flushes a file to disk", "syncs clocks", "forks a process"}, Answer: 0},
	{ID: "t6", Text: "Which is not a Go keyword?", Choices: []string{"defer", "select", "async"}, Answer: 2},
	{ID: "t7", Text: "How many bits are in a byte?", Choices: []string{"4", "8", "16"}, Answer: 1},
	{ID: "t8", Text: "What does a nonce name in Tether?", Choices: []string{"a user", "an instance", "a queue"}, Answer: 1},
	{ID: "t9", Text: "What is the capital of France?", Choices: []string{"Paris", "Lyon", "Nice"}, Answer: 0},
	{ID: "t10", Text: "Which sorts in O(n log n) worst case?", Choices: []string{"quicksort", "merge sort", "bubble sort"}, Answer: 1},
}

// next returns the first of qs not in asked.
func next(qs []Question, asked []string) (Question, bool) {
	seen := make(map[string]bool, len(asked))
	for _, id := range asked {
		seen[id] = true
	}
	for _, q := range qs {
		if !seen[q.ID] {
			return q, true
		}
	}
	return Question{}, false
}
