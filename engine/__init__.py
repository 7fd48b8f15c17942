"""The generic durable runtime: runs any registered LangGraph graph to completion."""
