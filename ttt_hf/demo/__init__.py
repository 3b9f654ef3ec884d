"""`ttt-hf demo`: a Gradio app on the zoo's models (app.py), for a visitor to try them: classify an image and watch
the inner loop train on it (classify.py), or watch a learner learn a new task in context (in_context.py). Gradio
is the optional `demo` extra; nothing here imports it until the app is built."""
